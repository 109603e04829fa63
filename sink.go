package reflexupload

import (
	"encoding/hex"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
	"time"
)

// parallelHashMin is the smallest write whose hashing is handed to another
// goroutine; smaller ones are cheaper to hash in line.
const parallelHashMin = 64 << 10

// parkAfter: a file that no write has touched for this long is closed
// ("parked") and opened again for the next write. An upload waiting for the
// network then holds no file descriptor besides its connection, and ten
// thousand slow uploads need ten thousand descriptors, not twice as many.
// An upload whose bytes flow keeps its file open, whatever the size of its
// writes (over TLS they are a record, at most 16 KiB, each): parking it
// after every write would cost two more system calls per write.
const parkAfter = 2 * time.Millisecond

// fileSink writes a file and, when asked, hashes the same bytes. A large
// write is hashed on a goroutine of its own beside the write, so that
// hashing does not add its time to the upload's; that goroutine lives only
// for the one write, so a slow upload (small writes) keeps no goroutine and
// no copy of its bytes between writes.
//
// A parked file is opened again with openat(2) in its folder, which the
// upload root keeps open, and written through the bare descriptor: no
// *os.File and no path walk per write, so parking costs a slow upload two
// system calls per write and no garbage.
type fileSink struct {
	park *parking // where to open it again; nil: never parked
	h    hash.Hash
	done chan struct{} // the hashing goroutine of a large write has finished

	mu      sync.Mutex  // guards the file against the idle timer
	f       sinkFile    // the file as opened first; nil once parked
	fd      int         // the file opened again, -1 while parked
	idle    *time.Timer // parks the file parkAfter after the last write
	parkErr error       // a parking by the timer failed: the next call says so
	closed  bool
	reopens int // how many times a parked file was opened again (tests)
}

// parking is where a parked file is opened again: its folder's descriptor
// and its base name.
type parking struct {
	dir  *os.File
	name string
}

// sinkFile is what a sink writes: a store's temp file (store.Temp) or the
// data of a resumable upload (tus.Appender). Only a local store's files
// are parked (appendTo gives where to open them again).
type sinkFile interface {
	io.Writer
	Sync() error
	Close() error
}

// newFileSink writes to f and feeds h (nil: no hash), which may already hold
// the state of the bytes before (a resumed upload). With park, the file is
// closed between small writes and opened again there, for appending.
func newFileSink(f sinkFile, h hash.Hash, park *parking) *fileSink {
	return &fileSink{f: f, fd: -1, h: h, park: park}
}

// appendTo returns where the file name of the upload root (a name the
// module made, in its private folder) is opened again when parked, or nil
// (no parking) if its folder cannot be opened.
func (u *uploadRoot) appendTo(name string) *parking {
	if !canPark {
		return nil
	}
	dir := path.Dir(name)
	if d, ok := u.folders.Load(dir); ok {
		return &parking{dir: d.(*os.File), name: path.Base(name)}
	}
	local, ok := u.files.(interface {
		OpenFolder(string) (*os.File, error)
	})
	if !ok {
		return nil
	}
	d, err := local.OpenFolder(dir)
	if err != nil {
		return nil
	}
	if got, loaded := u.folders.LoadOrStore(dir, d); loaded {
		d.Close()
		d = got.(*os.File)
	}
	return &parking{dir: d, name: path.Base(name)}
}

// closeFolders closes the folders appendTo opened.
func (u *uploadRoot) closeFolders() {
	u.folders.Range(func(k, v any) bool {
		v.(*os.File).Close()
		u.folders.Delete(k)
		return true
	})
}

// open opens a parked file again, waiting a little for a descriptor if
// there is none.
func (s *fileSink) open() error {
	return waitDescriptor(func() error {
		fd, err := openInFolder(s.park.dir, s.park.name)
		if err != nil {
			return &fs.PathError{Op: "open", Path: s.park.name, Err: err}
		}
		s.fd = fd
		s.reopens++
		return nil
	})
}

// write writes p to the file, opened or parked.
func (s *fileSink) write(p []byte) (int, error) {
	if s.f != nil {
		return s.f.Write(p)
	}
	if s.fd < 0 {
		if err := s.open(); err != nil {
			return 0, err
		}
	}
	n := 0
	for n < len(p) {
		k, err := fdWrite(s.fd, p[n:])
		if interrupted(err) {
			continue
		}
		if err != nil {
			return n, &fs.PathError{Op: "write", Path: s.park.name, Err: err}
		}
		n += k
	}
	return n, nil
}

// parkIdle parks the file when the idle timer fires.
func (s *fileSink) parkIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if err := s.parkNow(); err != nil && s.parkErr == nil {
		s.parkErr = err
	}
}

// parkNow closes the file; its error carries write errors the file system
// deferred. s.mu is held.
func (s *fileSink) parkNow() error {
	if s.f != nil {
		err := s.f.Close()
		s.f = nil
		return err
	}
	if s.fd >= 0 {
		err := fdClose(s.fd)
		s.fd = -1
		if err != nil {
			return &fs.PathError{Op: "close", Path: s.park.name, Err: err}
		}
	}
	return nil
}

// Write writes p to the file and the hash. p is not used after it returns;
// between two calls the hash is idle, so its state may be read or saved.
func (s *fileSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle != nil {
		s.idle.Stop()
	}
	if err := s.parkErr; err != nil {
		return 0, err
	}
	var n int
	var err error
	switch {
	case s.h == nil:
		n, err = s.write(p)
	case len(p) < parallelHashMin:
		s.h.Write(p)
		n, err = s.write(p)
	default:
		if s.done == nil {
			s.done = make(chan struct{})
		}
		go func() {
			s.h.Write(p)
			s.done <- struct{}{}
		}()
		n, err = s.write(p)
		<-s.done
	}
	if err == nil && s.park != nil {
		if s.idle == nil {
			s.idle = time.AfterFunc(parkAfter, s.parkIdle)
		} else {
			s.idle.Reset(parkAfter)
		}
	}
	return n, err
}

// sync flushes the file to stable storage.
func (s *fileSink) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncLocked()
}

func (s *fileSink) syncLocked() error {
	if s.parkErr != nil {
		return s.parkErr
	}
	if s.f != nil {
		return s.f.Sync()
	}
	if s.fd < 0 {
		if err := s.open(); err != nil {
			return err
		}
	}
	if err := fdSync(s.fd); err != nil {
		return &fs.PathError{Op: "sync", Path: s.park.name, Err: err}
	}
	return nil
}

// sum returns the hex digest, or "" without a hash.
func (s *fileSink) sum() string {
	if s.h == nil {
		return ""
	}
	return hex.EncodeToString(s.h.Sum(nil))
}

// close flushes the file when fsync is set and closes it. Its error
// carries any write error the file system deferred.
func (s *fileSink) close(fsync bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle != nil {
		s.idle.Stop()
	}
	s.closed = true
	err := s.parkErr
	if fsync && err == nil {
		err = s.syncLocked()
	}
	if cerr := s.parkNow(); err == nil {
		err = cerr
	}
	return err
}

// waitDescriptor runs open, and again for a little more than a second
// while it fails for want of a file descriptor (uploads close theirs all
// the time), before it gives up with that error.
func waitDescriptor(open func() error) error {
	err := open()
	for d := 5 * time.Millisecond; err != nil && isOutOfDescriptors(err) && d <= 640*time.Millisecond; d *= 2 {
		time.Sleep(d)
		err = open()
	}
	return err
}
