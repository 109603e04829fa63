package reflexupload

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// errBodyTooLarge is what bodyReader returns past max_request_size.
var errBodyTooLarge = errors.New("request body is over max_request_size")

// errBodyShort is what bodyReader returns when the body ends before its
// Content-Length: the request is incomplete (RFC 9112, section 6.3). Go's
// HTTP/1.1 and HTTP/2 servers report that themselves; an HTTP/3 body just
// ends.
var errBodyShort = fmt.Errorf("request body ends before its Content-Length: %w", io.ErrUnexpectedEOF)

// bodyReader wraps a request body: it counts the bytes read (atomically, so
// progress can be read from elsewhere), refuses to read past a limit, and
// keeps the first error, so the handler can tell a body problem (client gone,
// over the limit) from a malformed body or a disk failure.
type bodyReader struct {
	r        io.Reader
	limit    int64 // 0: none
	declared int64 // the request's Content-Length; 0 or -1: not checked
	n        atomic.Int64
	err      error         // first error other than io.EOF
	ctl      *readControl  // pushes the idle deadline; may be nil
	also     *atomic.Int64 // another count the bytes read go to; may be nil
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	b.ctl.push()
	if b.limit > 0 {
		rem := b.limit - b.n.Load()
		if rem <= 0 {
			// At the limit: one more byte means too large, EOF means exact.
			var one [1]byte
			k, err := io.ReadFull(b.r, one[:])
			if k > 0 {
				b.err = errBodyTooLarge
				return 0, b.err
			}
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			return 0, b.keep(b.short(err))
		}
		if int64(len(p)) > rem {
			p = p[:rem]
		}
	}
	k, err := b.r.Read(p)
	b.n.Add(int64(k))
	if b.also != nil {
		b.also.Add(int64(k))
	}
	return k, b.keep(b.short(err))
}

// short turns the end of a body shorter than its Content-Length into
// errBodyShort.
func (b *bodyReader) short(err error) error {
	if err == io.EOF && b.n.Load() < b.declared {
		return errBodyShort
	}
	return err
}

// rest reads the body from where it is to its end, which a request must
// reach to be complete (the epilogue after a multipart body's close
// delimiter, and the end of its length), and returns the error that ended
// it, or nil at its end.
func (b *bodyReader) rest() error {
	_, err := io.Copy(io.Discard, b)
	return err
}

// keep records the first real error and passes err on.
func (b *bodyReader) keep(err error) error {
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return err
}
