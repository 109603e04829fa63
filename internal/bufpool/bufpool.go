// Package bufpool lends large byte buffers to readers that need them only
// while data flows fast, so that memory follows the bytes in flight rather
// than the number of open uploads.
//
// The pattern it serves: a reader of a network body reads into a small
// buffer of its own; only when a read fills that buffer (more data is
// probably waiting) does it borrow a large buffer for the reads that
// follow, and it gives the large buffer back as soon as a read comes back
// short (the data has stopped flowing fast). An upload that waits for the
// network then holds only its small buffer. [Reader] implements that
// pattern for plain byte streams; the multipart reader does the same
// inside its own buffer management.
package bufpool

import (
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Sizes.
const (
	// Small is the size of the buffer a reader keeps for itself: the 4 KiB
	// of net/http's connection reader, so that a read into it goes straight
	// to the socket instead of through that reader's buffer, and no more,
	// since every upload in flight holds one.
	Small = 4 << 10

	// Medium is the size of the first buffer borrowed after a read filled
	// the small one: enough for a burst of a slow client, which then never
	// touches a large buffer.
	Medium = 64 << 10

	// Large is the usual size of a buffer borrowed while reads keep
	// filling the buffer they are given.
	Large = 1 << 20

	minClass = 15 // 32 KiB, the smallest buffer the pool lends
	maxClass = 24 // 16 MiB, the largest
)

var pools [maxClass - minClass + 1]sync.Pool

// Budget bounds the bytes lent by TryGet at once (buffers out of the
// pool, counted at their capacity). When a server is short of CPU, every
// upload's data waits in its socket, so every upload's reads fill their
// buffer: without a budget each would borrow a large buffer and the memory
// would follow the number of uploads again. Past the budget, readers stay
// with the buffer they have. Get, for what cannot wait, is counted but not
// refused. It is a cost of the process, not of each upload, but a burst of
// uploads on a server short of CPU may take all of it: 32 MiB is 32 large
// buffers (a single fast upload needs one), and 33 KiB for each of a
// thousand slow uploads at worst.
const Budget = 32 << 20

// lent is the bytes lent now.
var lent atomic.Int64

// Lent returns the bytes lent now (for tests and metrics).
func Lent() int64 { return lent.Load() }

// class returns the pool index for a buffer of at least n bytes, or -1 if
// n is too large to be pooled.
func class(n int) int {
	c := minClass
	if n > 1<<minClass {
		c = bits.Len(uint(n - 1))
	}
	if c > maxClass {
		return -1
	}
	return c - minClass
}

// Get returns a buffer of length n (and a capacity of the power of two at
// or above it, at least 32 KiB), from the pool when one is free. Its
// content is arbitrary. Give it back with Put once it is no longer used.
func Get(n int) *[]byte {
	c := class(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	lent.Add(1 << (c + minClass))
	return get(c, n)
}

// TryGet is Get within the Budget: it returns nil when lending the buffer
// would take the bytes lent past it.
func TryGet(n int) *[]byte {
	c := class(n)
	if c < 0 {
		return nil
	}
	size := int64(1) << (c + minClass)
	if lent.Add(size) > Budget {
		lent.Add(-size)
		return nil
	}
	return get(c, n)
}

func get(c, n int) *[]byte {
	if p, ok := pools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minClass))
	return &b
}

// Put gives back a buffer that Get returned. Nothing may use it after.
func Put(p *[]byte) {
	if p == nil {
		return
	}
	c := cap(*p)
	if c < 1<<minClass || c&(c-1) != 0 {
		return // not one of ours
	}
	i := class(c)
	if i < 0 {
		return
	}
	*p = (*p)[:c]
	lent.Add(-int64(c))
	pools[i].Put(p)
}

// Reader reads a stream in runs, into a small buffer of its own while the
// stream is slow and into pooled buffers while reads keep filling the
// buffer they are given: after a read that filled its buffer, the next
// read gets a bigger one (Medium, then the large size); after a short read,
// the small one again. See the package comment.
type Reader struct {
	r      io.Reader
	small  []byte
	held   *[]byte // the pooled buffer of level 1 or 2; nil at level 0
	level  int     // 0: small, 1: Medium, 2: large
	size   int     // length of the large buffer
	filled bool    // the last read filled its buffer
}

// NewReader returns a Reader of r that borrows buffers of up to largeSize
// bytes (Large when <= 0) while data flows fast.
func NewReader(r io.Reader, largeSize int) *Reader {
	if largeSize <= 0 {
		largeSize = Large
	}
	return &Reader{r: r, small: make([]byte, min(Small, largeSize)), size: largeSize}
}

// LevelSize is the size of the buffer of a level (1 or 2) for a reader
// whose large buffers have size bytes: Medium, then size.
func LevelSize(level, size int) int {
	if level == 1 {
		return min(Medium, size)
	}
	return size
}

// TopLevel is the highest level for a reader whose large buffers have
// size bytes: 2, or 1 when size is not over Medium.
func TopLevel(size int) int {
	if size <= Medium {
		return 1
	}
	return 2
}

// Next reads the next run of the stream with one Read of the underlying
// reader (retried when it returns nothing and no error). The run is valid
// until the next call to Next or Release. Like io.Reader, it may return
// data with an error.
func (a *Reader) Next() ([]byte, error) {
	switch {
	case !a.filled:
		a.Release()
	case a.level < TopLevel(a.size):
		// Up one size, if the budget allows; else stay.
		if next := TryGet(LevelSize(a.level+1, a.size)); next != nil {
			a.level++
			Put(a.held)
			a.held = next
		}
	}
	buf := a.small
	if a.held != nil {
		buf = *a.held
	}
	for range 100 {
		n, err := a.r.Read(buf)
		a.filled = n == len(buf)
		if n > 0 || err != nil {
			return buf[:n], err
		}
	}
	return nil, io.ErrNoProgress
}

// Release gives back the pooled buffer, if one is held. The Reader may be
// used again after it.
func (a *Reader) Release() {
	Put(a.held)
	a.held, a.level, a.filled = nil, 0, false
}

// Holding reports whether a large buffer is held (for tests).
func (a *Reader) Holding() bool { return a.held != nil }
