package formstream

import (
	"errors"
	"fmt"
	"io"

	"github.com/reflexupload/caddy-reflex-upload/internal/bufpool"
)

// fail makes err the sticky error and returns it.
func (rd *Reader) fail(err error) error {
	rd.err = err
	rd.dropBuffers()
	return err
}

// finish makes io.EOF the sticky error after the close delimiter.
func (rd *Reader) finish() (*Part, error) {
	rd.err = io.EOF
	rd.dropBuffers()
	return nil, io.EOF
}

// dropBuffers gives back the large buffer once nothing will be read any
// more.
func (rd *Reader) dropBuffers() {
	rd.buf, rd.r, rd.w = rd.small[:0], 0, 0
	bufpool.Put(rd.held)
	rd.held, rd.level = nil, 0
}

// Release gives back the large buffer the Reader may hold. The Reader
// cannot be used after it: its methods return an error. Release may be
// called more than once, and after the Reader has ended.
func (rd *Reader) Release() {
	if rd.err == nil {
		rd.err = errReleased
	}
	rd.dropBuffers()
}

// errReleased is the error of a Reader used after Release.
var errReleased = errors.New("formstream: reader released")

// grow moves the unread bytes into a buffer one size up, if there is one
// and the pool's budget allows it (or force), and reports whether it did.
func (rd *Reader) grow(force bool) bool {
	if rd.level >= bufpool.TopLevel(rd.largeSize) {
		return false
	}
	size := bufpool.LevelSize(rd.level+1, rd.largeSize)
	next := bufpool.TryGet(size)
	if next == nil {
		if !force {
			return false
		}
		next = bufpool.Get(size)
	}
	rd.level++
	rd.moveTo(*next)
	bufpool.Put(rd.held)
	rd.held, rd.grown = next, true
	return true
}

// moveTo moves the unread bytes to the front of dst and makes it the
// buffer.
func (rd *Reader) moveTo(dst []byte) {
	n := copy(dst, rd.buf[rd.r:rd.w])
	rd.base += int64(rd.r)
	rd.buf, rd.r, rd.w = dst, 0, n
}

// errAt returns the error of the given kind at buffer index i.
func (rd *Reader) errAt(kind error, i int, strict strictKind, format string, args ...any) error {
	return &bodyError{kind: kind, off: rd.base + int64(i), msg: fmt.Sprintf(format, args...), strict: strict}
}

// inputErr is the error once more input is needed and none can come:
// the error of src, or a truncated-body error if that was io.EOF.
func (rd *Reader) inputErr(what string) error {
	switch rd.srcErr {
	case nil:
		// Cannot happen: the buffer is always big enough.
		return rd.errAt(ErrMalformed, rd.r, notStrict, "%s does not fit in the buffer", what)
	case io.EOF:
		return rd.errAt(io.ErrUnexpectedEOF, rd.w, notStrict, "in %s", what)
	}
	return rd.srcErr
}

// more reads more input into the buffer. It reports whether it got any;
// if not, rd.srcErr is set (or, which cannot happen, the buffer is full).
func (rd *Reader) more() bool {
	if rd.srcErr != nil {
		return false
	}
	// Pooled buffers are held only while reads fill the room they are
	// given: a short read means the body has stopped arriving fast, so the
	// next read, which may wait for the network, goes to the small buffer.
	// A read that filled its room (more is probably waiting), or unread
	// bytes that need more room, move one size up.
	unread := rd.w - rd.r
	switch {
	case rd.grown:
		// Moved up already for this read (a full buffer in Part.next).
	case rd.held != nil && !rd.filled && unread < len(rd.small):
		rd.moveTo(rd.small)
		bufpool.Put(rd.held)
		rd.held, rd.level = nil, 0
	case rd.filled || unread == len(rd.buf):
		// Up one size if the pool's budget allows, or if what is buffered
		// needs the room (a header block over the small buffer).
		rd.grow(unread == len(rd.buf))
	}
	// Slide the unread bytes to the front when there is no room left, or
	// when that costs no more than the room it gives (always in the small
	// buffer, whose room should stay over net/http's 4 KiB reader).
	if rd.r > 0 && (rd.w == len(rd.buf) || rd.w-rd.r <= rd.r || rd.held == nil) {
		n := copy(rd.buf, rd.buf[rd.r:rd.w])
		rd.base += int64(rd.r)
		rd.r, rd.w = 0, n
	}
	if rd.w == len(rd.buf) {
		return false
	}
	for range 100 {
		room := len(rd.buf) - rd.w
		n, err := rd.src.Read(rd.buf[rd.w:])
		if n < 0 || n > room {
			rd.srcErr = errBadRead
			return false
		}
		rd.filled, rd.grown = n == room, false
		rd.w += n
		if err != nil {
			rd.srcErr = err
		}
		if n > 0 {
			return true
		}
		if err != nil {
			return false
		}
	}
	rd.srcErr = io.ErrNoProgress
	return false
}
