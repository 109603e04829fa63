package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// failingReader gives n bytes of data then fails.
type failingReader struct {
	r io.Reader
	n int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("client went away")
	}
	p = p[:min(int64(len(p)), f.n)]
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// TestTusResume appends in chunks that straddle parts, each through a
// fresh LoadTus (as another instance would), one of them cut mid-way, and
// publishes: the object is byte-identical, the sha256 carried across, and
// nothing of the upload is left.
func TestTusResume(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
	}{
		{"several parts", 2*part + 777},
		{"less than a part", 3 << 20},
		{"empty", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _ := testStore(t, part)
			ctx := context.Background()
			data := randomBytes(tc.size, 11)
			u, err := s.CreateTus(ctx, int64(tc.size), map[string]string{"filename": "t.bin"})
			if err != nil {
				t.Fatal(err)
			}
			id := u.Info.ID
			chunk := 3<<20 + 1
			for off := 0; off < tc.size; {
				u, err := s.LoadTus(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if got := u.Info.Offset(); got != int64(off) {
					t.Fatalf("offset %d, want %d", got, off)
				}
				end := min(off+chunk, tc.size)
				var r io.Reader = bytes.NewReader(data[off:end])
				cut := off == 0 && end-off > 1000
				if cut {
					// The first request is cut after 1000 bytes: they are kept.
					r = &failingReader{r: r, n: 1000}
					end = off + 1000
				}
				n, err := s.AppendTus(ctx, u, r)
				if cut != (err != nil) || n != int64(end-off) {
					t.Fatalf("append at %d: kept %d, %v", off, n, err)
				}
				off = end
			}
			u, err = s.LoadTus(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			sum, err := u.Sum()
			if err != nil {
				t.Fatal(err)
			}
			if want := sha256.Sum256(data); !bytes.Equal(sum, want[:]) {
				t.Error("the carried sha256 differs from the data's")
			}
			if tc.size > 0 {
				put(t, s, "t.bin", []byte("taken"), Overwrite)
				if err := s.FinishTus(ctx, u, "t.bin", Reject); !errors.Is(err, ErrExists) {
					t.Fatalf("FinishTus over an object: %v, want ErrExists", err)
				}
			}
			if err := s.FinishTus(ctx, u, "t (1).bin", Reject); err != nil {
				t.Fatal(err)
			}
			if got, _ := object(t, s, "t (1).bin"); !bytes.Equal(got, data) {
				t.Fatalf("published object: %d bytes, want %d", len(got), len(data))
			}
			if _, err := s.LoadTus(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("LoadTus after FinishTus: %v, want ErrNotFound", err)
			}
			if tc.size > 0 {
				assertClean(t, s, "site/t (1).bin", "site/t.bin")
			} else {
				assertClean(t, s, "site/t (1).bin")
			}
		})
	}
}

// TestTusStale: two writers load the same state; the second to save fails
// and nothing of its append counts; a part overwritten behind the state's
// back is detected, not mixed in.
func TestTusStale(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	ctx := context.Background()
	data := randomBytes(3*part, 12)
	u, err := s.CreateTus(ctx, int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.LoadTus(ctx, u.Info.ID)
	b, _ := s.LoadTus(ctx, u.Info.ID)
	if n, err := s.AppendTus(ctx, a, bytes.NewReader(data[:part+10])); err != nil || n != part+10 {
		t.Fatalf("first writer: %d, %v", n, err)
	}
	tails := func() int {
		n := 0
		for _, k := range keys(t, s) {
			if strings.Contains(k, ".tail.") {
				n++
			}
		}
		return n
	}
	if _, err := s.AppendTus(ctx, b, bytes.NewReader(randomBytes(100, 1))); !errors.Is(err, ErrStale) {
		t.Fatalf("stale writer: %v, want ErrStale", err)
	}
	if n := tails(); n != 1 {
		t.Errorf("%d tail objects, want 1 (the stale writer's removed)", n)
	}
	got, err := s.LoadTus(ctx, u.Info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Info.Offset() != part+10 {
		t.Errorf("offset %d, want %d", got.Info.Offset(), part+10)
	}

	// A stale writer that overwrote committed part 1 (no save of its own):
	// the upload refuses to load rather than mix.
	if _, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &s.bucket, Key: aws.String(s.tusKey(u.Info.ID, "")), UploadId: &u.Info.UploadID,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(randomBytes(part, 99)), ContentLength: aws.Int64(part),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadTus(ctx, u.Info.ID); !errors.Is(err, ErrInconsistent) {
		t.Errorf("LoadTus with an overwritten part: %v, want ErrInconsistent", err)
	}
	if err := s.TerminateTus(ctx, got); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s)
}

// TestTusLimit: an append keeps no byte past the declared size.
func TestTusLimit(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	ctx := context.Background()
	u, err := s.CreateTus(ctx, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.AppendTus(ctx, u, strings.NewReader("0123456789abcdef")); err != nil || n != 10 {
		t.Fatalf("append: %d, %v; want 10 kept", n, err)
	}
	if err := s.FinishTus(ctx, u, "ten", Overwrite); err != nil {
		t.Fatal(err)
	}
	if got, _ := object(t, s, "ten"); string(got) != "0123456789" {
		t.Errorf("object %q", got)
	}
	assertClean(t, s, "site/ten")
}

// TestTusConcat concatenates partial uploads, server-side when every
// partial but the last is big enough for a part, streamed otherwise.
func TestTusConcat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		sizes  []int
		copies bool
	}{
		{"by UploadPartCopy", []int{part + 3, 2*part + 1, 1000}, true},
		{"streamed (a small partial first)", []int{1000, part + 3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec := testStore(t, part)
			ctx := context.Background()
			var want []byte
			var partials []*TusUpload
			for i, size := range tc.sizes {
				data := randomBytes(size, uint64(i+20))
				want = append(want, data...)
				u, err := s.CreateTus(ctx, int64(size), nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.AppendTus(ctx, u, bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
				partials = append(partials, u)
			}
			rec.reset()
			u, err := s.ConcatTus(ctx, partials, nil)
			if err != nil {
				t.Fatal(err)
			}
			if copied := rec.count("UploadPartCopy") > 0; copied != tc.copies {
				t.Errorf("UploadPartCopy used: %v, want %v", copied, tc.copies)
			}
			if u, err = s.LoadTus(ctx, u.Info.ID); err != nil {
				t.Fatal(err)
			}
			if u.Info.Offset() != int64(len(want)) {
				t.Fatalf("offset %d, want %d", u.Info.Offset(), len(want))
			}
			sum, _ := u.Sum()
			if w := sha256.Sum256(want); !bytes.Equal(sum, w[:]) {
				t.Error("the concatenation's sha256 differs")
			}
			if err := s.FinishTus(ctx, u, "whole.bin", Reject); err != nil {
				t.Fatal(err)
			}
			if got, _ := object(t, s, "whole.bin"); !bytes.Equal(got, want) {
				t.Fatalf("concatenation: %d bytes, want %d, equal %v", len(got), len(want), bytes.Equal(got, want))
			}
			for _, p := range partials {
				if err := s.TerminateTus(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			assertClean(t, s, "site/whole.bin")
		})
	}
}

func TestCopyRanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		size int64
		want [][2]int64
	}{
		{10, [][2]int64{{0, 10}}},
		{copyPartSize, [][2]int64{{0, copyPartSize}}},
		{copyPartSize + 1, [][2]int64{{0, copyPartSize + 1}}},
		{copyPartSize + MinPartSize, [][2]int64{{0, copyPartSize}, {copyPartSize, copyPartSize + MinPartSize}}},
	} {
		if got := copyRanges(tc.size); !slices.Equal(got, tc.want) {
			t.Errorf("copyRanges(%d) = %v, want %v", tc.size, got, tc.want)
		}
	}
}

// TestSweepTus removes uploads idle for longer than the age with all their
// objects (a stray tail included) and multipart uploads that no state
// names; it keeps the rest.
func TestSweepTus(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	ctx := context.Background()
	a, err := s.CreateTus(ctx, -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendTus(ctx, a, bytes.NewReader(randomBytes(part+10, 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTus(ctx, 5, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(s.tusKey(a.Info.ID, ".tail.stray")), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: aws.String(s.tusKey(randomID(), ""))}); err != nil {
		t.Fatal(err)
	}
	put(t, s, "kept", []byte("kept"), Overwrite)
	before := len(keys(t, s))

	if n, err := s.SweepTus(ctx, time.Hour, time.Now()); err != nil || n != 0 {
		t.Fatalf("sweep of fresh uploads: %d, %v", n, err)
	}
	if len(keys(t, s)) != before || len(openUploads(t, s)) != 3 {
		t.Fatalf("a fresh upload was touched: %q, %q", keys(t, s), openUploads(t, s))
	}
	if n, err := s.SweepTus(ctx, time.Hour, time.Now().Add(2*time.Hour)); err != nil || n != 2 {
		t.Fatalf("sweep two hours later: %d removed, %v; want 2", n, err)
	}
	assertClean(t, s, "site/kept")
}

// TestTusSaveLost: the answer to a state save that succeeded is lost; the
// append still counts, and the upload stays whole.
func TestTusSaveLost(t *testing.T) {
	t.Parallel()
	s, rec := testStore(t, part)
	ctx := context.Background()
	data := randomBytes(part+100, 13)
	u, err := s.CreateTus(ctx, int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec.reset()
	rec.mu.Lock()
	// The PutObjects of an append: the tail, then the state.
	rec.lose = func(op string, n int) bool { return op == "PutObject" && n == 2 }
	rec.mu.Unlock()
	if n, err := s.AppendTus(ctx, u, bytes.NewReader(data)); err != nil || n != int64(len(data)) {
		t.Fatalf("append: %d, %v", n, err)
	}
	u, err = s.LoadTus(ctx, u.Info.ID)
	if err != nil || u.Info.Offset() != int64(len(data)) {
		t.Fatalf("after the lost answer: %v, offset %d", err, u.Info.Offset())
	}
	if err := s.FinishTus(ctx, u, "z", Reject); err != nil {
		t.Fatal(err)
	}
	if got, _ := object(t, s, "z"); !bytes.Equal(got, data) {
		t.Fatal("published object differs")
	}
	assertClean(t, s, "site/z")
}

// TestTusAppendCancelled: the request is cancelled mid-append (the client
// went away); the bytes received until then are kept.
func TestTusAppendCancelled(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	data := randomBytes(part+4000, 14)
	u, err := s.CreateTus(context.Background(), int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancellingReader{r: bytes.NewReader(data), n: part + 1000, cancel: cancel}
	n, err := s.AppendTus(ctx, u, r)
	if n != part+1000 || err == nil {
		t.Fatalf("append: kept %d, %v; want %d and the reader's error", n, err, part+1000)
	}
	got, err := s.LoadTus(context.Background(), u.Info.ID)
	if err != nil || got.Info.Offset() != part+1000 {
		t.Fatalf("after the cancel: %v, offset %d", err, got.Info.Offset())
	}
}

// cancellingReader gives n bytes, then cancels the request and fails.
type cancellingReader struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		return 0, context.Canceled
	}
	p = p[:min(int64(len(p)), c.n)]
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

// TestTusDeferredLength: an upload of unknown length takes bytes until its
// length is declared, then stops at it.
func TestTusDeferredLength(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	ctx := context.Background()
	u, err := s.CreateTus(ctx, -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendTus(ctx, u, strings.NewReader("hello ")); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishTus(ctx, u, "d", Overwrite); err == nil {
		t.Fatal("an upload of unknown length was published")
	}
	if err := s.DeclareTusLength(ctx, u, 3); err == nil {
		t.Error("a length below the offset was accepted")
	}
	if err := s.DeclareTusLength(ctx, u, 11); err != nil {
		t.Fatal(err)
	}
	if err := s.DeclareTusLength(ctx, u, 12); err == nil {
		t.Error("the length was declared twice")
	}
	if n, err := s.AppendTus(ctx, u, strings.NewReader("world and more")); err != nil || n != 5 {
		t.Fatalf("append: %d, %v; want 5 kept", n, err)
	}
	if err := s.FinishTus(ctx, u, "d", Overwrite); err != nil {
		t.Fatal(err)
	}
	if got, _ := object(t, s, "d"); string(got) != "hello world" {
		t.Errorf("object %q", got)
	}
	assertClean(t, s, "site/d")
}
