package store

import (
	"errors"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
)

// maxLinks bounds the symlinks followed to serve one name, as the kernel
// bounds them (ELOOP).
const maxLinks = 40

// storedFS is the file system the file server reads stored files from: the
// upload root, through os.Root, with symlinks resolved here one at a time,
// so that a name is served only if it ends inside the root and outside the
// private folder. A symlink (or a chain of them, or a symlinked folder on
// the path) that leads anywhere else is reported as missing: 404, as for a
// file that is not there.
type storedFS struct {
	l    *Local
	real string // the root's path with its own symlinks resolved
}

func newStoredFS(l *Local) storedFS {
	real, err := filepath.EvalSymlinks(l.dir)
	if err != nil {
		real = l.dir
	}
	return storedFS{l: l, real: real}
}

// Open opens a file for the file server, which names it by its path on
// disk (the root joined with the request path).
func (s storedFS) Open(name string) (fs.File, error) {
	rel, err := s.resolve("open", name)
	if err != nil {
		return nil, err
	}
	f, err := s.l.root.Open(rel)
	if err != nil {
		return nil, s.hide("open", name, err)
	}
	return f, nil
}

// Stat describes the file that Open would open.
func (s storedFS) Stat(name string) (fs.FileInfo, error) {
	rel, err := s.resolve("stat", name)
	if err != nil {
		return nil, err
	}
	fi, err := s.l.root.Stat(rel)
	return fi, s.hide("stat", name, err)
}

// hide turns every failure but a permission one into "not found", so that
// the file server answers 404 (it answers 400 for errors it does not know).
func (s storedFS) hide(op, name string, err error) error {
	if err == nil || errors.Is(err, fs.ErrPermission) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
}

// resolve follows the symlinks of name, an on-disk path under the root, and
// returns the root-relative path, free of symlinks, that it leads to.
func (s storedFS) resolve(op, name string) (string, error) {
	missing := &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	rel, err := filepath.Rel(s.l.dir, name)
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", missing
	}
	pending := strings.Split(filepath.ToSlash(rel), "/")
	var done []string // real folders (then the file) from the root down
	links := 0
	for len(pending) > 0 {
		seg := pending[0]
		pending = pending[1:]
		switch seg {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", missing // above the root
			}
			done = done[:len(done)-1]
			continue
		}
		next := path.Join(path.Join(done...), seg)
		fi, err := s.l.root.Lstat(next)
		if err != nil {
			return "", s.hide(op, name, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, seg)
			continue
		}
		if links++; links > maxLinks {
			return "", missing
		}
		target, err := s.l.root.Readlink(next)
		if err != nil {
			return "", missing
		}
		if filepath.IsAbs(target) {
			if target, err = s.inRoot(target); err != nil {
				return "", missing
			}
			done = done[:0]
		}
		pending = append(strings.Split(filepath.ToSlash(target), "/"), pending...)
	}
	if len(done) > 0 && strings.EqualFold(done[0], Private) {
		return "", missing // the private folder, however reached
	}
	if len(done) == 0 {
		return ".", nil
	}
	return path.Join(done...), nil
}

// inRoot gives an absolute symlink target relative to the root, or an error
// if it is not under it.
func (s storedFS) inRoot(target string) (string, error) {
	for _, dir := range []string{s.l.dir, s.real} {
		if rel, err := filepath.Rel(dir, target); err == nil && (filepath.IsLocal(rel) || rel == ".") {
			return rel, nil
		}
	}
	return "", fs.ErrNotExist
}
