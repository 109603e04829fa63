package reflexupload

import (
	"encoding/hex"
	"errors"
	"hash"
	"io/fs"
	"os"
	"time"
)

// parallelHashMin is the smallest write whose hashing is handed to another
// goroutine; smaller ones are cheaper to hash in line.
const parallelHashMin = 64 << 10

// parkBelow: a write smaller than this comes from a slow upload (the
// readers hand out long runs only while data flows fast), so the file is
// closed after it ("parked") and opened again for the next write. An upload
// waiting for the network then holds no file descriptor besides its
// connection, and ten thousand slow uploads need ten thousand descriptors,
// not twice as many.
const parkBelow = 64 << 10

// fileSink writes a file and, when asked, hashes the same bytes. A large
// write is hashed on a goroutine of its own beside the write, so that
// hashing does not add its time to the upload's; that goroutine lives only
// for the one write, so a slow upload (small writes) keeps no goroutine and
// no copy of its bytes between writes.
type fileSink struct {
	f      *os.File                 // nil while parked
	reopen func() (*os.File, error) // opens the file again to append; nil: never parked
	h      hash.Hash
	done   chan struct{} // the hashing goroutine of a large write has finished
}

// newFileSink writes to f and feeds h (nil: no hash), which may already hold
// the state of the bytes before (a resumed upload). With reopen, the file
// is closed between small writes and reopen opens it again, for appending.
func newFileSink(f *os.File, h hash.Hash, reopen func() (*os.File, error)) *fileSink {
	return &fileSink{f: f, h: h, reopen: reopen}
}

// appendTo returns a reopen function for newFileSink: the file name of the
// upload root, opened for appending.
func (u *uploadRoot) appendTo(name string) func() (*os.File, error) {
	return func() (*os.File, error) {
		return u.root.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	}
}

// file returns the open file, opening it again if it is parked. Out of
// descriptors, it waits a little for one (others are closed all the time)
// before it gives up.
func (s *fileSink) file() (*os.File, error) {
	if s.f != nil {
		return s.f, nil
	}
	var f *os.File
	err := waitDescriptor(func() (err error) {
		f, err = s.reopen()
		return err
	})
	if err != nil {
		return nil, err
	}
	s.f = f
	return f, nil
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

// Write writes p to the file and the hash. p is not used after it returns;
// between two calls the hash is idle, so its state may be read or saved.
func (s *fileSink) Write(p []byte) (int, error) {
	f, err := s.file()
	if err != nil {
		return 0, err
	}
	var n int
	switch {
	case s.h == nil:
		n, err = f.Write(p)
	case len(p) < parallelHashMin:
		s.h.Write(p)
		n, err = f.Write(p)
	default:
		if s.done == nil {
			s.done = make(chan struct{})
		}
		go func() {
			s.h.Write(p)
			s.done <- struct{}{}
		}()
		n, err = f.Write(p)
		<-s.done
	}
	if err == nil && s.reopen != nil && len(p) < parkBelow {
		// Close carries write errors the file system deferred.
		err = s.f.Close()
		s.f = nil
	}
	return n, err
}

// sync flushes the file to stable storage.
func (s *fileSink) sync() error {
	f, err := s.file()
	if err != nil {
		return err
	}
	return f.Sync()
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
	if s.f == nil && !fsync {
		return nil // parked: closed already, its error checked then
	}
	var err error
	if fsync {
		err = s.sync()
	}
	if s.f != nil {
		if cerr := s.f.Close(); err == nil {
			err = cerr
		}
		s.f = nil
	}
	return err
}

// removeTemp removes a temp file. Removing needs a descriptor (to open its
// folder), so when the process is out of them it tries again in the
// background, backing off, for about a minute: a refused upload leaves
// nothing behind once the pressure passes (and provisioning removes what a
// crash left).
func (u *uploadRoot) removeTemp(name string) {
	err := u.root.Remove(name)
	if err == nil || errors.Is(err, fs.ErrNotExist) || !isOutOfDescriptors(err) {
		return
	}
	go func() {
		for d := 10 * time.Millisecond; d < 30*time.Second; d *= 2 {
			time.Sleep(d)
			if err := u.root.Remove(name); err == nil || !isOutOfDescriptors(err) {
				return
			}
		}
	}()
}
