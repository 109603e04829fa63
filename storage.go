package reflexupload

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/store"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// roots holds the open upload roots, shared by the handlers of every loaded
// config, so that a config reload does not close a root that the uploads of
// the old config are still writing to.
var roots = caddy.NewUsagePool()

// staleTempAge is how old a temp file left by a crashed process must be
// before provisioning removes it. Live uploads write to theirs constantly.
const staleTempAge = time.Hour

// uploadRoot is what the handlers of one upload folder share, across
// config reloads: the store of its files and resumable uploads, the
// progress registry, the one-writer locks, the clock and the sweeper.
type uploadRoot struct {
	dir      string            // absolute path
	stored   Stored            // the storage backend, open
	files    store.Store       // the stored files
	data     tus.Data          // the data of resumable uploads
	states   tus.States        // their state, for the sweeper (handlers save with their fsync)
	progress progress.Registry // the uploads in flight and recently finished

	clockMu sync.Mutex
	clock   func() time.Time // for expiry and retention; replaceable (tests)

	locks   lock.Locker // the one-writer lock of each resumable upload
	writing tusRequests // this process's tus requests that use an upload
	servers sync.Map    // *http.Server values that stop the tus writers on exit (watchShutdown)

	sweepEvery atomic.Int64  // the sweeper's interval, in nanoseconds
	expiry     atomic.Int64  // chunk_expiry, in nanoseconds: the age of a stale write
	closed     chan struct{} // closed by Destruct: the sweeper stops
	resweep    chan struct{} // the sweep interval changed: the sweeper waits anew

	heldMu sync.Mutex
	held   map[string]store.Publisher // completed resumable uploads the app has yet to accept

	folders sync.Map // folder -> *os.File, opened once, where parked files are opened again (sink.go)
}

// now reads the upload root's clock.
func (u *uploadRoot) now() time.Time {
	u.clockMu.Lock()
	defer u.clockMu.Unlock()
	return u.clock()
}

// setClock replaces the upload root's clock, and the progress registry's
// when it has one of its own (tests).
func (u *uploadRoot) setClock(now func() time.Time) {
	u.clockMu.Lock()
	u.clock = now
	u.clockMu.Unlock()
	if c, ok := u.progress.(interface{ SetClock(func() time.Time) }); ok {
		c.SetClock(now)
	}
}

// Destruct closes the root when the last handler using it is cleaned up.
func (u *uploadRoot) Destruct() error {
	close(u.closed)
	u.closeFolders()
	err := u.stored.Close()
	if cerr := u.progress.Close(); err == nil {
		err = cerr
	}
	if c, ok := u.locks.(io.Closer); ok {
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// release drops this handler's use of the root.
func (u *uploadRoot) release() error {
	_, err := roots.Delete(u.dir)
	return err
}

// openUploadRoot opens the upload root dir, or shares the one open: the
// first handler of a root opens its storage and makes its state with its
// backends (for the local storage: creating the folder and its private
// folder if missing, and removing temp files that a crash left behind),
// and starts its sweeper.
func openUploadRoot(dir string, storage Storage, state State, opts StateOptions, logger *zap.Logger) (*uploadRoot, error) {
	abs, err := caddy.FastAbs(dir)
	if err != nil {
		return nil, fmt.Errorf("root %q: %w", dir, err)
	}
	v, _, err := roots.LoadOrNew(abs, func() (caddy.Destructor, error) {
		s, err := storage.OpenStorage(abs)
		if err != nil {
			return nil, err
		}
		locks, reg, err := state.NewState(opts)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		u := &uploadRoot{dir: abs, stored: s, files: s, data: s, states: s.TusStates(false), progress: reg, locks: locks,
			clock: time.Now, closed: make(chan struct{}), resweep: make(chan struct{}, 1), held: map[string]store.Publisher{}}
		if l, ok := s.(interface {
			RemoveStaleTemps(time.Duration) ([]string, error)
		}); ok {
			removed, err := l.RemoveStaleTemps(staleTempAge)
			if err != nil {
				logger.Warn("listing private folder", zap.Error(err))
			}
			for _, name := range removed {
				logger.Info("removed stale temp file", zap.String("name", name))
			}
		}
		expiry := opts.Idle
		if expiry <= 0 {
			expiry = defaultChunkExpiry
		}
		u.setSweepInterval(expiry)
		go u.runSweeper(logger)
		return u, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*uploadRoot), nil
}

// hold keeps the batch of a completed resumable upload until unhold.
func (u *uploadRoot) hold(id string, b store.Publisher) {
	u.heldMu.Lock()
	defer u.heldMu.Unlock()
	u.held[id] = b
}

// unhold takes back the batch that hold kept for id. Without one (none was
// held) it gives an empty batch, whose keep and undo do nothing.
func (u *uploadRoot) unhold(id string) store.Publisher {
	u.heldMu.Lock()
	defer u.heldMu.Unlock()
	b := u.held[id]
	delete(u.held, id)
	if b == nil {
		b = u.files.NewBatch("", false)
	}
	return b
}

// storeError maps a failure to put a file in place to a client error where
// the client's name is the cause: the name is taken (by a file, or a folder),
// or a folder on its path is a file.
func storeError(err error) error {
	switch {
	case errors.Is(err, fs.ErrExist), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR),
		errors.Is(err, syscall.ENOTEMPTY):
		return errFileExists.with(err, "a file or folder with this name exists already")
	case isNoSpace(err):
		return errInsufficientStorage.with(err, "not enough storage space for the upload")
	case isOutOfDescriptors(err):
		return errServerBusy.with(err, "the server has too many open files; try again later")
	case errors.Is(err, tus.ErrLost):
		return errUploadNotFound.with(err, "the upload's data was lost; start it again")
	case errors.Is(err, tus.ErrStale):
		return errTusInterrupted.with(err, "another request wrote to the upload meanwhile; resume from its offset")
	case errors.Is(err, tus.ErrUnsupported):
		return errTusUnsupported.with(err, "resumable uploads are not supported by this site's storage")
	}
	return err
}
