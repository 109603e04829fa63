package filecheck

import (
	"bytes"
	"errors"
	"testing"
)

func mustAccept(t *testing.T, entries ...string) Accept {
	t.Helper()
	a, err := ParseAccept(entries)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestCheck feeds files to a Check in pieces of several sizes: the size is
// refused the moment it passes MaxSize, the type once SniffLen bytes (or
// the end) are there, MinSize at the end.
func TestCheck(t *testing.T) {
	html := append([]byte("<!doctype html><html><body>"), bytes.Repeat([]byte("x"), 5000)...)
	png := append(pngBytes(), make([]byte, 5000)...)
	for _, tc := range []struct {
		name     string
		rules    Rules
		file     string
		data     []byte
		want     error // nil: accepted
		atOffset int   // the bytes written before the refusal, at most
	}{
		{"within the limits", Rules{MaxSize: 6000, MinSize: 10, Accept: mustAccept(t, "image/*")}, "a.png", png, nil, 0},
		{"one byte over max_size", Rules{MaxSize: int64(len(png)) - 1, Accept: mustAccept(t)}, "a.png", png, ErrTooLarge, len(png)},
		{"under min_size", Rules{MinSize: int64(len(png)) + 1, Accept: mustAccept(t)}, "a.png", png, ErrTooSmall, len(png)},
		{"html named png", Rules{Accept: mustAccept(t, "image/*")}, "a.png", html, ErrType, SniffLen},
		{"short file sniffed at the end", Rules{Accept: mustAccept(t, "image/*")}, "a.png", html[:100], ErrType, 100},
	} {
		for _, piece := range []int{1, 1000, 1 << 20} {
			c := (&tc.rules).New(tc.file, "")
			var err error
			written := 0
			for off := 0; off < len(tc.data) && err == nil; off += piece {
				p := tc.data[off:min(off+piece, len(tc.data))]
				err = c.Write(p)
				written = off + len(p)
			}
			if err == nil {
				err = c.End()
			}
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("%s, pieces of %d: error %v; want %v", tc.name, piece, err, tc.want)
			}
			if tc.want != nil && piece == 1 && written > tc.atOffset {
				t.Errorf("%s, pieces of %d: refused after %d bytes; want at most %d", tc.name, piece, written, tc.atOffset)
			}
			if tc.want == nil && (c.Size() != int64(len(tc.data)) || c.ContentType() != "image/png") {
				t.Errorf("%s: size %d, type %q", tc.name, c.Size(), c.ContentType())
			}
		}
	}
}

// TestResume continues a check at a later request: a full head is sniffed
// at once, a known type is not sniffed again, and a partial upload's type
// is not checked at all.
func TestResume(t *testing.T) {
	r := Rules{MaxSize: 10000, Accept: mustAccept(t, "image/*")}
	html := bytes.Repeat([]byte("<html><script>x</script></html>"), 200)
	if _, err := r.Resume("a.png", "", int64(len(html)), html, ""); !errors.Is(err, ErrType) {
		t.Errorf("full html head: %v; want ErrType", err)
	}
	c, err := r.Resume("a.png", "", 100, html[:100], "")
	if err != nil || c.Sniffed() {
		t.Fatalf("short head: %v, sniffed %v", err, c.Sniffed())
	}
	if err := c.Write(html[100:SniffLen]); !errors.Is(err, ErrType) {
		t.Errorf("head completed by a write: %v; want ErrType", err)
	}
	c, err = r.Resume("a.png", "", 5000, nil, "image/png")
	if err != nil || !c.Sniffed() || c.ContentType() != "image/png" {
		t.Fatalf("typed already: %v, %v %q", err, c.Sniffed(), c.ContentType())
	}
	if err := c.Write(make([]byte, 5001)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("past max_size from the offset: %v", err)
	}
	p := r.SizeOnly(0)
	if err := p.Write(html); err != nil {
		t.Errorf("partial upload: %v", err)
	}
	if err := p.End(); err != nil {
		t.Errorf("partial upload end: %v", err)
	}
}
