package reflexupload

import (
	"encoding/hex"
	"hash"
	"os"
)

// parallelHashMin is the smallest write whose hashing is handed to another
// goroutine; smaller ones are cheaper to hash in line.
const parallelHashMin = 64 << 10

// fileSink writes a file and, when asked, hashes the same bytes. A large
// write is hashed on a goroutine of its own beside the write, so that
// hashing does not add its time to the upload's; that goroutine lives only
// for the one write, so a slow upload (small writes) keeps no goroutine and
// no copy of its bytes between writes.
type fileSink struct {
	f    *os.File
	h    hash.Hash
	done chan struct{} // the hashing goroutine of a large write has finished
}

// newFileSink writes to f and feeds h (nil: no hash), which may already hold
// the state of the bytes before (a resumed upload).
func newFileSink(f *os.File, h hash.Hash) *fileSink {
	return &fileSink{f: f, h: h}
}

// Write writes p to the file and the hash. p is not used after it returns;
// between two calls the hash is idle, so its state may be read or saved.
func (s *fileSink) Write(p []byte) (int, error) {
	if s.h == nil {
		return s.f.Write(p)
	}
	if len(p) < parallelHashMin {
		s.h.Write(p)
		return s.f.Write(p)
	}
	if s.done == nil {
		s.done = make(chan struct{})
	}
	go func() {
		s.h.Write(p)
		s.done <- struct{}{}
	}()
	n, err := s.f.Write(p)
	<-s.done
	return n, err
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
	var err error
	if fsync {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}
