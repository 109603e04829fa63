package reflexupload

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// roots holds the open upload roots, shared by the handlers of every loaded
// config, so that a config reload does not close a root that the uploads of
// the old config are still writing to.
var roots = caddy.NewUsagePool()

// staleTempAge is how old a temp file left by a crashed process must be
// before provisioning removes it. Live uploads write to theirs constantly.
const staleTempAge = time.Hour

// tempPrefix names the temp files of standard uploads in the private folder.
const tempPrefix = "tmp-"

// uploadRoot is the upload folder, opened as an os.Root so that no name can
// reach outside it (no "..", no symlink escape).
type uploadRoot struct {
	dir      string // absolute path
	root     *os.Root
	progress *registry // the uploads in flight and recently finished

	tusMu        sync.Mutex
	writers      map[string]*tusWriter // resumable uploads with a request using them
	shuttingDown atomic.Bool           // the process exits: no tus request may write (stopWriters)
	servers      sync.Map              // *http.Server values that stop the tus writers on exit (watchShutdown)
}

// Destruct closes the root when the last handler using it is cleaned up.
func (u *uploadRoot) Destruct() error { return u.root.Close() }

// release drops this handler's use of the root.
func (u *uploadRoot) release() error {
	_, err := roots.Delete(u.dir)
	return err
}

// openUploadRoot opens (creating it if missing) the upload folder and its
// private folder, and removes temp files that a crash left behind.
func openUploadRoot(dir string, logger *zap.Logger) (*uploadRoot, error) {
	abs, err := caddy.FastAbs(dir)
	if err != nil {
		return nil, fmt.Errorf("root %q: %w", dir, err)
	}
	v, _, err := roots.LoadOrNew(abs, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, fmt.Errorf("creating root: %w", err)
		}
		if err := os.MkdirAll(path.Join(abs, tusDir), 0o700); err != nil {
			return nil, fmt.Errorf("creating private folder: %w", err)
		}
		r, err := os.OpenRoot(abs)
		if err != nil {
			return nil, fmt.Errorf("opening root: %w", err)
		}
		u := &uploadRoot{dir: abs, root: r, progress: newRegistry(), writers: map[string]*tusWriter{}}
		u.removeStaleTemps(logger)
		return u, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*uploadRoot), nil
}

// removeStaleTemps removes temp files older than staleTempAge.
func (u *uploadRoot) removeStaleTemps(logger *zap.Logger) {
	entries, err := fs.ReadDir(u.root.FS(), reservedDir)
	if err != nil {
		logger.Warn("listing private folder", zap.Error(err))
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < staleTempAge {
			continue
		}
		if err := u.root.Remove(path.Join(reservedDir, e.Name())); err == nil {
			logger.Info("removed stale temp file", zap.String("name", e.Name()))
		}
	}
}

// createTemp creates a new, empty temp file in the private folder.
func (u *uploadRoot) createTemp() (*os.File, string, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	name := path.Join(reservedDir, tempPrefix+hex.EncodeToString(b[:]))
	f, err := u.root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, "", err
	}
	return f, name, nil
}

// exists reports whether something is stored at name.
func (u *uploadRoot) exists(name string) bool {
	_, err := u.root.Lstat(name)
	return err == nil
}

// maxRenameTries bounds the search for a free name under the rename policy.
const maxRenameTries = 1000

// commit moves the temp file tmp into place at name under the conflict
// policy, and returns the name it was stored at. The move is atomic: a
// reader sees the old file or the new one, never a part of one. With fsync
// the folder is flushed so the new name survives a crash.
func (u *uploadRoot) commit(tmp, name, policy string, fsync bool) (string, error) {
	dir := path.Dir(name)
	if dir != "." {
		if err := u.root.MkdirAll(dir, 0o755); err != nil {
			return "", storeError(err)
		}
	}
	var err error
	stored := name
	switch policy {
	case conflictOverwrite:
		err = u.root.Rename(tmp, name)
	case conflictReject:
		err = u.root.Link(tmp, name)
	case conflictRename:
		for i := 0; ; i++ {
			if i > 0 {
				stored = numbered(name, i)
			}
			err = u.root.Link(tmp, stored)
			if !errors.Is(err, fs.ErrExist) || i == maxRenameTries {
				break
			}
		}
	}
	if err != nil {
		return "", storeError(err)
	}
	if policy != conflictOverwrite {
		// The link is in place; the temp name is no longer needed.
		_ = u.root.Remove(tmp)
	}
	if fsync {
		if err := u.syncDir(dir); err != nil {
			_ = u.root.Remove(stored)
			return "", err
		}
	}
	return stored, nil
}

// syncDir flushes a folder's entries to stable storage.
func (u *uploadRoot) syncDir(dir string) error {
	d, err := u.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
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
	}
	return err
}

// numbered gives the i-th alternative of name: "a/b (i).ext".
func numbered(name string, i int) string {
	ext := path.Ext(name)
	base := strings.TrimSuffix(name, ext)
	if base == "" || strings.HasSuffix(base, "/") { // ".bashrc" has no extension
		base, ext = name, ""
	}
	return fmt.Sprintf("%s (%d)%s", base, i, ext)
}

// checkPlace reports whether a file could be put at name under the policy
// without meeting something in the way: a file where a folder on its path
// should be, or, for overwrite, a folder in the file's place; for reject,
// anything in its place.
func (u *uploadRoot) checkPlace(name, policy string) error {
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if fi, err := u.root.Lstat(d); err == nil && !fi.IsDir() {
			return syscall.ENOTDIR
		}
	}
	fi, err := u.root.Lstat(name)
	if err != nil {
		return nil
	}
	switch {
	case policy == conflictReject:
		return fs.ErrExist
	case policy == conflictOverwrite && fi.IsDir():
		return syscall.EISDIR
	}
	return nil
}
