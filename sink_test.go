package reflexupload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// newParkingSink makes a sink of a fresh file that parks in its folder.
func newParkingSink(t *testing.T) (*fileSink, string) {
	t.Helper()
	dir := t.TempDir()
	name := filepath.Join(dir, "data")
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return newFileSink(f, sha256.New(), &parking{dir: d, name: "data"}), name
}

// A slow upload's file is parked between its writes; a fast stream of
// small writes (TLS records of 16 KiB with no wait between them) keeps it
// open. Both write the same bytes and hash them.
func TestSinkParksOnlySlowWrites(t *testing.T) {
	record := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB
	const writes = 200

	fast, fastName := newParkingSink(t)
	for range writes {
		if _, err := fast.Write(record); err != nil {
			t.Fatal(err)
		}
	}
	// On a loaded machine a few writes may wait past parkAfter.
	if fast.reopens > writes/10 {
		t.Errorf("a fast stream of %d small writes reopened its file %d times, want at most %d", writes, fast.reopens, writes/10)
	}

	// Slow writes: the file is parked between them (on a loaded machine
	// the idle timer may fire late, so one may find it still open).
	slow, slowName := newParkingSink(t)
	for range 5 {
		time.Sleep(10 * parkAfter)
		if _, err := slow.Write(record); err != nil {
			t.Fatal(err)
		}
	}
	if slow.reopens < 3 {
		t.Errorf("5 writes %v apart reopened the file %d times, want 4 (parked between them)", 10*parkAfter, slow.reopens)
	}
	time.Sleep(10 * parkAfter)
	slow.mu.Lock()
	open := slow.f != nil || slow.fd >= 0
	slow.mu.Unlock()
	if open {
		t.Errorf("the file is still open %v after the last write", 10*parkAfter)
	}

	for _, c := range []struct {
		s    *fileSink
		name string
		n    int
	}{{fast, fastName, writes}, {slow, slowName, 5}} {
		if err := c.s.close(false); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(c.name)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat(record, c.n)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes on disk, want %d identical", c.name, len(got), len(want))
		}
		sum := sha256.Sum256(want)
		if c.s.sum() != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: sha256 %s, want %x", c.name, c.s.sum(), sum)
		}
	}
}
