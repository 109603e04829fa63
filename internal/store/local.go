package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

// TempPrefix names the temp files in the private folder.
const TempPrefix = "tmp-"

// Local is the Store on a local folder, opened as an os.Root.
type Local struct {
	dir  string // absolute path
	root *os.Root
}

// OpenLocal opens (creating it if missing) the folder dir, an absolute
// path, and its private folders.
func OpenLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating root: %w", err)
	}
	if err := os.MkdirAll(path.Join(dir, tusDir), 0o700); err != nil {
		return nil, fmt.Errorf("creating private folder: %w", err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening root: %w", err)
	}
	return &Local{dir: dir, root: r}, nil
}

// Close closes the folder.
func (l *Local) Close() error { return l.root.Close() }

// Dir is the folder's absolute path.
func (l *Local) Dir() string { return l.dir }

// RemoveStaleTemps removes the temp files older than age (left by a
// crashed process; live uploads write to theirs constantly) and gives their
// names.
func (l *Local) RemoveStaleTemps(age time.Duration) ([]string, error) {
	entries, err := fs.ReadDir(l.root.FS(), Private)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), TempPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < age {
			continue
		}
		if err := l.root.Remove(path.Join(Private, e.Name())); err == nil {
			removed = append(removed, e.Name())
		}
	}
	return removed, nil
}

// localTemp is a temp file of a Local, named relative to its root.
type localTemp struct {
	*os.File
	name string
}

func (t localTemp) Name() string { return t.name }

// CreateTemp implements Store: a file in the private folder, named
// relative to the root.
func (l *Local) CreateTemp(context.Context) (Temp, error) {
	f, name, err := l.createTemp()
	if err != nil {
		return nil, err
	}
	return localTemp{f, name}, nil
}

func (l *Local) createTemp() (*os.File, string, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	name := path.Join(Private, TempPrefix+hex.EncodeToString(b[:]))
	f, err := l.root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, "", err
	}
	return f, name, nil
}

// RemoveTemp implements Store. Removing needs a descriptor (to open its
// folder), so when the process is out of them it tries again in the
// background, backing off, for about a minute: a refused upload leaves
// nothing behind once the pressure passes (and RemoveStaleTemps removes
// what a crash left).
func (l *Local) RemoveTemp(name string) {
	err := l.root.Remove(name)
	if err == nil || errors.Is(err, fs.ErrNotExist) || !OutOfDescriptors(err) {
		return
	}
	go func() {
		for d := 10 * time.Millisecond; d < 30*time.Second; d *= 2 {
			time.Sleep(d)
			if err := l.root.Remove(name); err == nil || !OutOfDescriptors(err) {
				return
			}
		}
	}()
}

// OutOfDescriptors reports whether err is the process (EMFILE) or the
// system (ENFILE) out of file descriptors.
func OutOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// OpenFolder opens a folder of the store (a folder of the private one,
// where the upload handlers open their parked temp files again).
func (l *Local) OpenFolder(dir string) (*os.File, error) { return l.root.Open(dir) }

// Exists implements Store.
func (l *Local) Exists(_ context.Context, name string) bool {
	_, err := l.root.Lstat(name)
	return err == nil
}

// NewBatch implements Store.
func (l *Local) NewBatch(policy Policy, fsync bool) Publisher { return l.newBatch(policy, fsync) }

// FS implements Store: the symlink-safe view of the folder.
func (l *Local) FS() fs.StatFS { return newStoredFS(l) }

// ServeRoot implements Store: the folder's path.
func (l *Local) ServeRoot() string { return l.dir }

// isMissing reports whether err says a file is not there.
func isMissing(err error) bool { return errors.Is(err, fs.ErrNotExist) }
