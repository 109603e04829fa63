package s3store

import (
	"context"
	"runtime"
	"testing"
)

// TestWriterMemory: a writer holds no part in memory. Writing 40 MiB (8
// parts) allocates far less than one part in all, and a writer mid-stream
// (a part uploaded, the spool half full) keeps a few KiB on the heap.
// Not parallel: it reads the process's allocation counters.
func TestWriterMemory(t *testing.T) {
	s, rec := testStore(t, part)
	ctx := context.Background()
	chunk := randomBytes(32<<10, 9) // what io.Copy hands a writer
	const total = 40 << 20

	// Warm up the client (connections, the SDK's lazily built state).
	put(t, s, "warm", randomBytes(part+1, 1), Overwrite)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w, err := s.NewWriter(ctx, WriterOptions{Key: "big"})
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < total; n += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit("big", Overwrite); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	parts := rec.count("UploadPart") - 2 // minus the warm-up's
	t.Logf("writing %d MiB in %d parts allocated %d KiB in all (%d KiB per part)", total>>20, parts, allocated>>10, allocated>>10/uint64(parts))
	if parts != total/part {
		t.Fatalf("%d parts, want %d", parts, total/part)
	}
	if allocated/uint64(parts) > part/10 {
		t.Errorf("writing %d MiB allocated %d KiB per part: a part is held in memory", total>>20, allocated>>10/uint64(parts))
	}

	// Writers mid-stream: what each keeps on the heap.
	const writers = 16
	ws := make([]*Writer, writers)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range ws {
		if ws[i], err = s.NewWriter(ctx, WriterOptions{}); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < part+part/2; n += len(chunk) {
			if _, err := ws[i].Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
		// The first part has gone (a slow upload has no part in flight
		// most of the time; a part in flight holds the SDK's request).
		if _, err := ws[i].up.wait(); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perWriter := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / writers
	t.Logf("a writer mid-stream keeps %d bytes on the heap (to the noise of the measure)", perWriter)
	if perWriter > 64<<10 {
		t.Errorf("a writer mid-stream keeps %d KiB on the heap, want a few KiB", perWriter>>10)
	}
	for _, w := range ws {
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
	}
	assertClean(t, s, "site/big", "site/warm")
}
