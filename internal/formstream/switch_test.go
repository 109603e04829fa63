package formstream

import (
	"io"
	"strings"
	"testing"
	"unsafe"
)

// patternReader returns its bytes in reads whose sizes follow a pattern:
// a positive entry is a read that fills as much of the buffer as it may
// (up to that many bytes), 0 a read that fills the whole buffer offered.
// With check set, it checks the Reader's memory rule: a read that follows
// a short read (one that did not fill the room it was given) is offered no
// more than the small buffer (true while what is buffered fits in it).
type patternReader struct {
	t       *testing.T
	check   bool
	b       []byte
	pattern []int
	i       int
	small   int
	short   bool // the last read was short
	reads   int
}

func (p *patternReader) Read(b []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	if p.check && p.short && len(b) > p.small {
		p.t.Fatalf("read %d: %d bytes offered after a short read; the small buffer is %d", p.reads, len(b), p.small)
	}
	n := len(b)
	if k := p.pattern[p.i%len(p.pattern)]; k > 0 {
		n = min(n, k)
	}
	p.i++
	p.reads++
	n = copy(b, p.b[:min(n, len(p.b))])
	p.b = p.b[n:]
	p.short = n < len(b)
	return n, nil
}

// TestBufferSwitch reads bodies whose delimiters and look-alikes sit at
// every offset around the points where the Reader moves between its small
// buffer and the large one, with read patterns that switch often, and
// compares with mime/multipart. It also checks that the large buffer is
// given back at the end.
func TestBufferSwitch(t *testing.T) {
	const small = 40
	d := "\r\n--" + tb
	looks := []string{"", d[:len(d)-1], d + "x", d + "-x", d[:3], "\r"}
	patterns := [][]int{
		{0},             // every read fills: small, then large for good
		{0, 7},          // fill, short: back and forth
		{0, 0, 13, 1},   // two fills, then short ones
		{small, 3},      // exactly the small buffer, then short
		{small - 1, 0},  // just short of it, then a fill
		{1, 0, 0, 0, 5}, // short start
	}
	for n := 0; n < 3*small+len(d); n++ {
		data := strings.ReplaceAll(string(pseudoRandom(n, uint64(n))), d, "xxxx")
		for _, look := range looks {
			b := dl + disp("a") + "\r\n" + data + look + ndl + dispFile("f", "x.bin") + "\r\n" + look + data + endDelim
			std, err := readStdlib([]byte(b), tb, 1<<20)
			if err != nil || len(std) != 2 {
				t.Fatalf("stdlib: %d parts, %v", len(std), err)
			}
			for pi, pat := range patterns {
				for via := 0; via < numVia; via++ {
					src := &patternReader{t: t, b: []byte(b), pattern: pat, small: small}
					rd := newReaderSmall(src, tb, 1, small, 256, 16, 16)
					got, err := readOurs(rd, via, 64)
					if err != nil || len(got) != 2 {
						t.Fatalf("offset %d, pattern %d, via %d, look %q: %d parts, %v", n, pi, via, look, len(got), err)
					}
					for i := range std {
						comparePart(t, i, std[i], got[i])
					}
					if rd.held != nil {
						t.Fatalf("offset %d, pattern %d: the large buffer is held after the end", n, pi)
					}
				}
			}
		}
	}
}

// TestSlowBodyHoldsSmallBuffer reads a large file part that arrives in
// short reads (a slow client) and checks that the Reader holds no large
// buffer between reads, then that a fast stretch borrows one and a
// slow one gives it back.
// A Reader waiting for a slow body holds its small buffer and little
// more: every upload in flight has one.
func TestReaderIsSmall(t *testing.T) {
	if size := unsafe.Sizeof(Reader{}); size > 2<<10 {
		t.Errorf("a Reader takes %d bytes besides its buffers, want at most 2 KiB", size)
	}
}

func TestSlowBodyHoldsSmallBuffer(t *testing.T) {
	body := singleFileBody(4<<20, tb)
	slow := &patternReader{t: t, check: true, b: body, pattern: []int{1400}, small: SmallBufferSize}
	rd := NewReader(slow, tb, 0)
	p, err := rd.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, err := p.Chunk()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rd.held != nil {
			t.Fatal("a large buffer is held while the body arrives slowly")
		}
	}

	// Fast (every read fills), then slow: the buffer is borrowed, then given back.
	mixed := &patternReader{t: t, check: true, b: body, pattern: append(make([]int, 4), 1000, 1000, 1000), small: SmallBufferSize}
	rd = NewReader(mixed, tb, 0)
	if p, err = rd.NextPart(); err != nil {
		t.Fatal(err)
	}
	borrowed, returned := false, false
	for {
		_, err := p.Chunk()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rd.held != nil {
			borrowed = true
		} else if borrowed {
			returned = true
		}
	}
	if !borrowed || !returned {
		t.Errorf("borrowed %v, returned %v; want both", borrowed, returned)
	}
}

// TestRelease checks that Release gives the buffer back and ends the
// Reader.
func TestRelease(t *testing.T) {
	body := singleFileBody(1<<20, tb)
	rd := NewReader(&chunkReader{b: body, n: len(body)}, tb, 0)
	p, err := rd.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Chunk(); err != nil {
		t.Fatal(err)
	}
	if rd.held == nil {
		t.Fatal("no large buffer while reads fill it")
	}
	rd.Release()
	if rd.held != nil {
		t.Error("the large buffer is held after Release")
	}
	if _, err := p.Chunk(); err == nil || err == io.EOF {
		t.Errorf("Chunk after Release: %v; want an error", err)
	}
	if _, err := rd.NextPart(); err == nil {
		t.Error("NextPart after Release: no error")
	}
	rd.Release() // twice is fine
}
