package bufpool

import (
	"bytes"
	"io"
	"testing"
)

func TestGetPut(t *testing.T) {
	for _, tc := range []struct{ n, cap int }{
		{1, 32 << 10}, {32 << 10, 32 << 10}, {32<<10 + 1, 64 << 10}, {18590, 32 << 10},
		{Large, Large}, {Large + 1, 2 << 20}, {16 << 20, 16 << 20}, {16<<20 + 1, 16<<20 + 1},
	} {
		p := Get(tc.n)
		if len(*p) != tc.n || cap(*p) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d; want cap %d", tc.n, len(*p), cap(*p), tc.cap)
		}
		Put(p)
	}
	Put(nil)
	odd := make([]byte, 1000)
	Put(&odd) // not a pool size: dropped
}

// steps returns its bytes in reads of the given sizes (0: as much as
// offered), and records how much each read was offered.
type steps struct {
	b       []byte
	sizes   []int
	i       int
	offered []int
}

func (s *steps) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	s.offered = append(s.offered, len(p))
	n := len(p)
	if k := s.sizes[s.i%len(s.sizes)]; k > 0 {
		n = min(n, k)
	}
	s.i++
	n = copy(p, s.b[:min(n, len(s.b))])
	s.b = s.b[n:]
	return n, nil
}

// TestReader checks the buffer rule: the first read and every read after
// a short one get the small buffer; a read after one that filled its
// buffer gets the large one; the bytes come through unchanged.
func TestReader(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	src := &steps{b: data, sizes: []int{0, 0, 100, 0, 7, 0, 0, 0, 1}}
	r := NewReader(src, 256<<10)
	var got []byte
	for {
		c, err := r.Next()
		got = append(got, c...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r.Release()
	if !bytes.Equal(got, data) {
		t.Fatal("the bytes changed")
	}
	level := 0
	for i, off := range src.offered {
		want := Small
		if level > 0 {
			want = LevelSize(level, 256<<10)
		}
		if off != want {
			t.Fatalf("read %d: offered %d bytes; want %d", i, off, want)
		}
		if k := src.sizes[i%len(src.sizes)]; k == 0 || k >= off {
			level = min(level+1, 2)
		} else {
			level = 0
		}
	}
	if r.Holding() {
		t.Error("a large buffer is held after Release")
	}
}

// TestBudget checks that TryGet refuses past the budget and that Put
// gives the bytes back; a Reader then stays with the buffer it has.
func TestBudget(t *testing.T) {
	before := Lent()
	var held []*[]byte
	for Lent()+Large <= Budget {
		p := TryGet(Large)
		if p == nil {
			t.Fatalf("TryGet refused at %d lent, under the budget", Lent())
		}
		held = append(held, p)
	}
	if p := TryGet(Large); p != nil {
		t.Fatalf("TryGet lent past the budget (%d lent)", Lent())
	}
	// A Reader whose reads fill its buffer stays with the small one.
	src := &steps{b: bytes.Repeat([]byte("x"), 1<<20), sizes: []int{0}}
	r := NewReader(src, Large)
	for {
		if _, err := r.Next(); err != nil {
			break
		}
		if r.Holding() {
			t.Fatal("a Reader borrowed past the budget")
		}
	}
	for _, p := range held {
		Put(p)
	}
	if Lent() != before {
		t.Errorf("lent %d after giving everything back; want %d", Lent(), before)
	}
}
