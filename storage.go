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
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
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
	progress progress.Registry // the uploads in flight and recently finished

	clockMu sync.Mutex
	clock   func() time.Time // for expiry and retention; replaceable (tests)

	locks   lock.Locker // the one-writer lock of each resumable upload
	writing tusRequests // this process's tus requests that use an upload
	servers sync.Map    // *http.Server values that stop the tus writers on exit (watchShutdown)

	heldMu sync.Mutex
	held   map[string]*batch // completed resumable uploads the app has yet to accept

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
	u.closeFolders()
	return u.root.Close()
}

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
		u := &uploadRoot{dir: abs, root: r, progress: progress.NewMemory(), clock: time.Now, locks: new(lock.Memory), held: map[string]*batch{}}
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

// A batch moves the files of one request into place under a conflict
// policy, all or none. plan checks every name against the others and
// against the disk before anything moves, and picks the names; put then
// moves each file in. Until keep, undo takes back everything the batch did:
// files it stored are removed, files it replaced (overwrite) come back from
// the private folder, folders it created are removed. So a request that is
// refused, before or after its files moved (forward mode), leaves the root
// as it found it.
type batch struct {
	u       *uploadRoot
	policy  string
	fsync   bool
	names   []string        // the names asked for
	targets []string        // the planned name of each file
	taken   map[string]bool // planned files and the folders they need
	done    []placed
}

// placed is one file a batch moved in, with what it takes to undo it.
type placed struct {
	name   string      // where it is stored
	file   fs.FileInfo // what it stored there, to tell it from a later file
	backup string      // the file it replaced, linked aside; "" if none
	dirs   []string    // the folders created for it, outermost first
}

func (u *uploadRoot) newBatch(policy string, fsync bool) *batch {
	return &batch{u: u, policy: policy, fsync: fsync, taken: map[string]bool{}}
}

// plan decides where each of names goes, or refuses the whole batch with
// the index of the first name in conflict. A name conflicts when a folder
// it needs is a file on disk, under every policy; when its place is a
// folder (on disk, or one that another name of the batch needs), unless
// rename gives it another name; under reject, when its place is taken at
// all, also by another name of the batch. Under overwrite, a name given
// twice is stored twice and the later file wins.
func (b *batch) plan(names []string) (int, error) {
	folders := map[string]bool{}
	for _, n := range names {
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			folders[d] = true
		}
	}
	isDir := map[string]bool{} // the disk's answer for each folder needed
	for i, n := range names {
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			ok, seen := isDir[d]
			if !seen {
				fi, err := b.u.root.Lstat(d)
				ok = err != nil || fi.IsDir() // missing is fine: it will be made
				isDir[d] = ok
			}
			if !ok {
				return i, syscall.ENOTDIR
			}
		}
	}
	files := map[string]bool{}
	b.names, b.targets = names, make([]string, len(names))
	for i, n := range names {
		fi, err := b.u.root.Lstat(n)
		onDisk := err == nil
		asDir := folders[n] || onDisk && fi.IsDir()
		target := n
		switch {
		case b.policy == conflictOverwrite && asDir:
			return i, syscall.EISDIR
		case b.policy == conflictReject && (asDir || onDisk || files[n]):
			return i, fs.ErrExist
		case b.policy == conflictRename && (asDir || onDisk || files[n]):
			if target = b.freeName(n, files, folders); target == "" {
				return i, fs.ErrExist
			}
		}
		files[target] = true
		b.targets[i] = target
	}
	for n := range files {
		b.taken[n] = true
	}
	for d := range folders {
		b.taken[d] = true
	}
	return 0, nil
}

// freeName gives the first of "a (1).png", "a (2).png", … that is neither
// on disk nor planned, or "" after maxRenameTries.
func (b *batch) freeName(name string, files, folders map[string]bool) string {
	for i := 1; i <= maxRenameTries; i++ {
		c := numbered(name, i)
		if files[c] || folders[c] {
			continue
		}
		if _, err := b.u.root.Lstat(c); errors.Is(err, fs.ErrNotExist) {
			return c
		}
	}
	return ""
}

// put moves the temp file tmp into place as the i-th file of the plan, and
// returns the name it was stored at. The move is atomic: a reader sees the
// old file or the new one, never a part of one. With fsync the folder is
// flushed so the new name survives a crash.
func (b *batch) put(i int, tmp string) (string, error) {
	name := b.targets[i]
	p := placed{name: name}
	dir := path.Dir(name)
	if dir != "." {
		p.dirs = b.u.missingDirs(dir)
		if err := b.u.root.MkdirAll(dir, 0o755); err != nil {
			b.u.removeDirs(p.dirs)
			return "", storeError(err)
		}
	}
	var err error
	switch b.policy {
	case conflictOverwrite:
		if p.backup, err = b.u.setAside(name); err == nil {
			if err = b.u.root.Rename(tmp, name); err != nil && p.backup != "" {
				_ = b.u.root.Remove(p.backup)
			}
		}
	case conflictReject:
		err = b.u.root.Link(tmp, name)
	case conflictRename:
		for n := 1; ; n++ {
			err = b.u.root.Link(tmp, p.name)
			if !errors.Is(err, fs.ErrExist) || n > maxRenameTries {
				break
			}
			// Another request took the planned name since: the next free one.
			for p.name = numbered(b.names[i], n); b.taken[p.name]; n++ {
				p.name = numbered(b.names[i], n+1)
			}
		}
	}
	if err != nil {
		b.u.removeDirs(p.dirs)
		return "", storeError(err)
	}
	if b.policy != conflictOverwrite {
		// The link is in place; the temp name is no longer needed.
		_ = b.u.root.Remove(tmp)
	}
	p.file, _ = b.u.root.Lstat(p.name)
	b.done = append(b.done, p)
	if b.fsync {
		if err := b.u.syncDir(dir); err != nil {
			return "", err
		}
	}
	return p.name, nil
}

// setAside hard-links the file at name into the private folder, so that it
// can be given back, and returns the link's name; "" when there is no file.
func (u *uploadRoot) setAside(name string) (string, error) {
	var r [12]byte
	_, _ = rand.Read(r[:])
	backup := path.Join(reservedDir, tempPrefix+hex.EncodeToString(r[:]))
	err := u.root.Link(name, backup)
	switch {
	case err == nil:
		return backup, nil
	case errors.Is(err, fs.ErrNotExist):
		return "", nil
	}
	if fi, lerr := u.root.Lstat(name); lerr == nil && fi.IsDir() {
		err = syscall.EISDIR // a folder appeared there since the plan
	}
	return "", err
}

// undo takes back what the batch did, the last file first. A file that
// another request has put in the place since (while the app was asked, in
// forward mode) is the newer one and stays.
func (b *batch) undo() {
	for i := len(b.done) - 1; i >= 0; i-- {
		p := b.done[i]
		cur, err := b.u.root.Lstat(p.name)
		switch {
		case err != nil || p.file == nil || !os.SameFile(cur, p.file):
			if p.backup != "" {
				_ = b.u.root.Remove(p.backup)
			}
		case p.backup != "":
			_ = b.u.root.Rename(p.backup, p.name)
		default:
			_ = b.u.root.Remove(p.name)
		}
		b.u.removeDirs(p.dirs)
	}
	b.done = nil
}

// keep makes the batch final: the replaced files are let go.
func (b *batch) keep() {
	for _, p := range b.done {
		if p.backup != "" {
			_ = b.u.root.Remove(p.backup)
		}
	}
	b.done = nil
}

// missingDirs lists the folders of dir, outermost first, that do not exist.
func (u *uploadRoot) missingDirs(dir string) []string {
	var missing []string
	for d := dir; d != "."; d = path.Dir(d) {
		if _, err := u.root.Lstat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
	}
	return missing
}

// removeDirs removes folders, innermost first, where they are empty.
func (u *uploadRoot) removeDirs(dirs []string) {
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = u.root.Remove(dirs[i])
	}
}

// hold keeps the batch of a completed resumable upload until unhold.
func (u *uploadRoot) hold(id string, b *batch) {
	u.heldMu.Lock()
	defer u.heldMu.Unlock()
	u.held[id] = b
}

// unhold takes back the batch that hold kept for id. Without one (none was
// held) it gives an empty batch, whose keep and undo do nothing.
func (u *uploadRoot) unhold(id string) *batch {
	u.heldMu.Lock()
	defer u.heldMu.Unlock()
	b := u.held[id]
	delete(u.held, id)
	if b == nil {
		b = u.newBatch("", false)
	}
	return b
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
	case isOutOfDescriptors(err):
		return errServerBusy.with(err, "the server has too many open files; try again later")
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
