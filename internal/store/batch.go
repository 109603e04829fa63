package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// maxRenameTries bounds the search for a free name under the rename policy.
const maxRenameTries = 1000

// A Batch moves the files of one request into place under a conflict
// policy, all or none. Plan checks every name against the others and
// against the disk before anything moves, and picks the names; put then
// moves each file in. Until Keep, Undo takes back everything the batch did:
// files it stored are removed, files it replaced (overwrite) come back from
// the private folder, folders it created are removed. So a request that is
// refused, before or after its files moved (forward mode), leaves the root
// as it found it.
type Batch struct {
	l       *Local
	policy  Policy
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

func (l *Local) newBatch(policy Policy, fsync bool) *Batch {
	return &Batch{l: l, policy: policy, fsync: fsync, taken: map[string]bool{}}
}

// Plan decides where each of names goes, or refuses the whole batch with
// the index of the first name in conflict. A name conflicts when a folder
// it needs is a file on disk, under every policy; when its place is a
// folder (on disk, or one that another name of the batch needs), unless
// rename gives it another name; under reject, when its place is taken at
// all, also by another name of the batch. Under overwrite, a name given
// twice is stored twice and the later file wins.
func (b *Batch) Plan(names []string) (int, error) {
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
				fi, err := b.l.root.Lstat(d)
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
		fi, err := b.l.root.Lstat(n)
		onDisk := err == nil
		asDir := folders[n] || onDisk && fi.IsDir()
		target := n
		switch {
		case b.policy == Overwrite && asDir:
			return i, syscall.EISDIR
		case b.policy == Reject && (asDir || onDisk || files[n]):
			return i, fs.ErrExist
		case b.policy == Rename && (asDir || onDisk || files[n]):
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
func (b *Batch) freeName(name string, files, folders map[string]bool) string {
	for i := 1; i <= maxRenameTries; i++ {
		c := Numbered(name, i)
		if files[c] || folders[c] {
			continue
		}
		if _, err := b.l.root.Lstat(c); errors.Is(err, fs.ErrNotExist) {
			return c
		}
	}
	return ""
}

// Put moves the temp file tmp into place as the i-th file of the plan, and
// returns the name it was stored at. The move is atomic: a reader sees the
// old file or the new one, never a part of one. With fsync the folder is
// flushed so the new name survives a crash.
func (b *Batch) Put(i int, tmp string) (string, error) {
	name := b.targets[i]
	p := placed{name: name}
	dir := path.Dir(name)
	if dir != "." {
		p.dirs = b.l.missingDirs(dir)
		if err := b.l.root.MkdirAll(dir, 0o755); err != nil {
			b.l.removeDirs(p.dirs)
			return "", err
		}
	}
	var err error
	switch b.policy {
	case Overwrite:
		if p.backup, err = b.l.setAside(name); err == nil {
			if err = b.l.root.Rename(tmp, name); err != nil && p.backup != "" {
				_ = b.l.root.Remove(p.backup)
			}
		}
	case Reject:
		err = b.l.root.Link(tmp, name)
	case Rename:
		for n := 1; ; n++ {
			err = b.l.root.Link(tmp, p.name)
			if !errors.Is(err, fs.ErrExist) || n > maxRenameTries {
				break
			}
			// Another request took the planned name since: the next free one.
			for p.name = Numbered(b.names[i], n); b.taken[p.name]; n++ {
				p.name = Numbered(b.names[i], n+1)
			}
		}
	}
	if err != nil {
		b.l.removeDirs(p.dirs)
		return "", err
	}
	if b.policy != Overwrite {
		// The link is in place; the temp name is no longer needed.
		_ = b.l.root.Remove(tmp)
	}
	p.file, _ = b.l.root.Lstat(p.name)
	b.done = append(b.done, p)
	if b.fsync {
		if err := b.l.syncDir(dir); err != nil {
			return "", err
		}
	}
	return p.name, nil
}

// setAside hard-links the file at name into the private folder, so that it
// can be given back, and returns the link's name; "" when there is no file.
func (l *Local) setAside(name string) (string, error) {
	var r [12]byte
	_, _ = rand.Read(r[:])
	backup := path.Join(Private, TempPrefix+hex.EncodeToString(r[:]))
	err := l.root.Link(name, backup)
	switch {
	case err == nil:
		return backup, nil
	case errors.Is(err, fs.ErrNotExist):
		return "", nil
	}
	if fi, lerr := l.root.Lstat(name); lerr == nil && fi.IsDir() {
		err = syscall.EISDIR // a folder appeared there since the plan
	}
	return "", err
}

// Undo takes back what the batch did, the last file first. A file that
// another request has put in the place since (while the app was asked, in
// forward mode) is the newer one and stays.
func (b *Batch) Undo() {
	for i := len(b.done) - 1; i >= 0; i-- {
		p := b.done[i]
		cur, err := b.l.root.Lstat(p.name)
		switch {
		case err != nil || p.file == nil || !os.SameFile(cur, p.file):
			if p.backup != "" {
				_ = b.l.root.Remove(p.backup)
			}
		case p.backup != "":
			_ = b.l.root.Rename(p.backup, p.name)
		default:
			_ = b.l.root.Remove(p.name)
		}
		b.l.removeDirs(p.dirs)
	}
	b.done = nil
}

// Keep makes the batch final: the replaced files are let go.
func (b *Batch) Keep() {
	for _, p := range b.done {
		if p.backup != "" {
			_ = b.l.root.Remove(p.backup)
		}
	}
	b.done = nil
}

// missingDirs lists the folders of dir, outermost first, that do not exist.
func (l *Local) missingDirs(dir string) []string {
	var missing []string
	for d := dir; d != "."; d = path.Dir(d) {
		if _, err := l.root.Lstat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
	}
	return missing
}

// removeDirs removes folders, innermost first, where they are empty.
func (l *Local) removeDirs(dirs []string) {
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = l.root.Remove(dirs[i])
	}
}

// syncDir flushes a folder's entries to stable storage.
func (l *Local) syncDir(dir string) error {
	d, err := l.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Numbered gives the i-th alternative of name: "a/b (i).ext".
func Numbered(name string, i int) string {
	ext := path.Ext(name)
	base := strings.TrimSuffix(name, ext)
	if base == "" || strings.HasSuffix(base, "/") { // ".bashrc" has no extension
		base, ext = name, ""
	}
	return fmt.Sprintf("%s (%d)%s", base, i, ext)
}
