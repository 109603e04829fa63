package reflexupload

import (
	"encoding/hex"
	"hash"
	"os"
)

// parallelHashMin is the smallest write whose hashing is handed to the
// hashing goroutine; smaller ones are cheaper to hash in line.
const parallelHashMin = 64 << 10

// fileSink writes a file and, when asked, hashes the same bytes beside the
// write on another goroutine, so that hashing does not add its time to the
// upload's.
type fileSink struct {
	f    *os.File
	h    hash.Hash
	work chan []byte
	done chan struct{}
}

// newFileSink writes to f and feeds h (nil: no hash), which may already hold
// the state of the bytes before (a resumed upload).
func newFileSink(f *os.File, h hash.Hash) *fileSink {
	s := &fileSink{f: f}
	if h != nil {
		work, done := make(chan []byte), make(chan struct{})
		s.h, s.work, s.done = h, work, done
		go func() {
			for p := range work {
				h.Write(p)
				done <- struct{}{}
			}
		}()
	}
	return s
}

// Write writes p to the file and the hash. p is not used after it returns;
// between two calls the hash is idle, so its state may be read or saved.
func (s *fileSink) Write(p []byte) (int, error) {
	if s.h == nil {
		return s.f.Write(p)
	}
	if len(p) < parallelHashMin || s.work == nil {
		s.h.Write(p)
		return s.f.Write(p)
	}
	s.work <- p
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

// close stops the hashing goroutine, flushes the file when fsync is set and
// closes it. Its error carries any write error the file system deferred.
func (s *fileSink) close(fsync bool) error {
	if s.work != nil {
		close(s.work)
		s.work = nil
	}
	var err error
	if fsync {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}
