package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// stuck is how long a test waits for a writer that should return before
// calling it stuck: a guard against a hang, not a measure of speed.
const stuck = 2 * time.Minute

// returns runs f and fails the test when it does not return.
func returns(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(stuck):
		t.Fatalf("%s did not return", what)
	}
}

// spoolFiles counts the files in the store's spool folder.
func spoolFiles(t testing.TB, s *Store) int {
	t.Helper()
	entries, err := os.ReadDir(s.tempDir)
	if err != nil {
		t.Error(err)
	}
	return len(entries)
}

// TestWriterSizes: objects of sizes around the part boundaries come out
// byte for byte, in place (a key) and staged, and nothing else is left.
func TestWriterSizes(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	var want []string
	for _, size := range []int{0, 1, part - 1, part, part + 1, 2 * part, 3*part + 1} {
		for _, key := range []bool{true, false} {
			name := fmt.Sprintf("size-%d-key-%v", size, key)
			data := randomBytes(size, uint64(size)+1)
			opts := WriterOptions{}
			if key {
				opts.Key = name
			}
			w, err := s.NewWriter(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			write(t, w, data, 64<<10+3)
			if err := w.Commit(name, Reject); err != nil {
				t.Fatalf("%s: Commit: %v", name, err)
			}
			if got, ok := object(t, s, name); !ok || !bytes.Equal(got, data) {
				t.Errorf("%s: object present %v, %d bytes, equal %v", name, ok, len(got), bytes.Equal(got, data))
			}
			want = append(want, "site/"+name)
		}
	}
	slices.Sort(want)
	assertClean(t, s, want...)
}

// TestWriterInFlight: parts upload while the next ones spool, at most
// maxInFlight at once, with at most one spool file more than that. The
// store holds each part until another one is in flight (or the writes are
// done), so a writer that waited for each part before spooling the next
// would never get past its first.
func TestWriterInFlight(t *testing.T) {
	t.Parallel()
	s, rec := testStore(t, part)
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		inFlight int
		most     int
		files    int
		open     bool
	)
	rec.mu.Lock()
	rec.around = func(op string, req *http.Request, send func(*http.Request) (*http.Response, error)) (*http.Response, error) {
		if op != "UploadPart" {
			return send(req)
		}
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		files = max(files, spoolFiles(t, s))
		cond.Broadcast()
		for inFlight < maxInFlight && !open {
			cond.Wait()
		}
		mu.Unlock()
		res, err := send(req)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return res, err
	}
	rec.mu.Unlock()

	data := randomBytes(6*part+1, 11)
	w, err := s.NewWriter(context.Background(), WriterOptions{Key: "f"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	release := func() {
		mu.Lock()
		open = true
		cond.Broadcast()
		mu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		write(t, w, data, 32<<10)
	}()
	select {
	case <-done:
		release()
	case <-time.After(stuck):
		release()
		<-done
		t.Fatal("the writes did not return while the first part waited for another one to be in flight")
	}
	if err := w.Commit("f", Overwrite); err != nil {
		t.Fatal(err)
	}
	if got, _ := object(t, s, "f"); !bytes.Equal(got, data) {
		t.Fatalf("object: %d bytes, want %d", len(got), len(data))
	}
	mu.Lock()
	defer mu.Unlock()
	if most != maxInFlight {
		t.Errorf("at most %d parts in flight at once, want %d", most, maxInFlight)
	}
	if files > maxInFlight+1 {
		t.Errorf("%d spool files at once, want at most %d", files, maxInFlight+1)
	}
	if n := rec.count("UploadPart"); n != 7 {
		t.Errorf("UploadPart sent %d times, want 7", n)
	}
	assertClean(t, s, "site/f")
}

// TestWriterNoSpareSpool: when no file can be made for the next part (the
// temp folder is gone: out of descriptors or disk space is the same), each
// part uploads before the next one spools into the same file, and the
// object is whole.
func TestWriterNoSpareSpool(t *testing.T) {
	t.Parallel()
	s, rec := testStore(t, part)
	w, err := s.NewWriter(context.Background(), WriterOptions{Key: "f"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := os.RemoveAll(s.tempDir); err != nil { // the open spool stays usable
		t.Fatal(err)
	}
	data := randomBytes(3*part+1, 15)
	write(t, w, data, 32<<10)
	if err := w.Commit("f", Overwrite); err != nil {
		t.Fatal(err)
	}
	if got, _ := object(t, s, "f"); !bytes.Equal(got, data) {
		t.Fatalf("object: %d bytes, want %d", len(got), len(data))
	}
	if n := rec.count("UploadPart"); n != 4 {
		t.Errorf("UploadPart sent %d times, want 4", n)
	}
	if err := os.Mkdir(s.tempDir, 0o700); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s, "site/f")
}

// stallParts makes the store stall every part upload after its first MiB
// until the request is cancelled; stalled receives one value per stalled
// part.
func stallParts(rec *recorder) (stalled chan string) {
	stalled = make(chan string, 16)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.around = func(op string, req *http.Request, send func(*http.Request) (*http.Response, error)) (*http.Response, error) {
		if op == "UploadPart" {
			req = req.Clone(req.Context())
			req.Body = &stallingBody{r: req.Body, after: 1 << 20, ctx: req.Context(), stalled: stalled, name: req.URL.Query().Get("partNumber")}
		}
		return send(req)
	}
	return stalled
}

// stallingBody reads through after bytes, then blocks until ctx is done.
type stallingBody struct {
	r       io.ReadCloser
	after   int
	ctx     context.Context
	stalled chan string
	name    string
	once    sync.Once
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.after == 0 {
		b.once.Do(func() { b.stalled <- b.name })
		<-b.ctx.Done()
		return 0, b.ctx.Err()
	}
	n, err := b.r.Read(p[:min(len(p), b.after)])
	b.after -= n
	return n, err
}

func (b *stallingBody) Close() error { return b.r.Close() }

// TestWriterStopInFlight: with parts in flight (the store has part of
// their bytes), Abort, a cancelled context and a multipart upload removed
// under the writer end the write with nothing left: no object, no open
// multipart upload, no spool file.
func TestWriterStopInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		key  bool
		stop func(t *testing.T, w *Writer, cancel context.CancelFunc)
	}{
		{"abort", true, func(t *testing.T, w *Writer, cancel context.CancelFunc) {
			returns(t, "Abort", func() {
				if err := w.Abort(); err != nil {
					t.Errorf("Abort: %v", err)
				}
			})
		}},
		{"abort staged", false, func(t *testing.T, w *Writer, cancel context.CancelFunc) {
			returns(t, "Abort", func() {
				if err := w.Abort(); err != nil {
					t.Errorf("Abort: %v", err)
				}
			})
		}},
		{"context cancelled, then Write", true, func(t *testing.T, w *Writer, cancel context.CancelFunc) {
			cancel()
			returns(t, "Write", func() {
				if _, err := w.Write([]byte("more")); !errors.Is(err, context.Canceled) {
					t.Errorf("Write after cancel: %v, want context.Canceled", err)
				}
			})
		}},
		{"context cancelled, then Commit", false, func(t *testing.T, w *Writer, cancel context.CancelFunc) {
			cancel()
			returns(t, "Commit", func() {
				if err := w.Commit("f", Overwrite); !errors.Is(err, context.Canceled) {
					t.Errorf("Commit after cancel: %v, want context.Canceled", err)
				}
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec := testStore(t, part)
			stalled := stallParts(rec)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opts := WriterOptions{}
			if tc.key {
				opts.Key = "f"
			}
			w, err := s.NewWriter(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			// Two parts go and stall; the third spools.
			returns(t, "writing two parts and a byte", func() { write(t, w, randomBytes(2*part+1, 3), 1<<20) })
			for range maxInFlight {
				select {
				case <-stalled:
				case <-time.After(stuck):
					t.Fatal("the parts did not reach the store")
				}
			}
			if n := len(openUploads(t, s)); n != 1 {
				t.Fatalf("%d multipart uploads open mid-way, want 1", n)
			}
			if n := spoolFiles(t, s); n != maxInFlight+1 {
				t.Fatalf("%d spool files mid-way, want %d", n, maxInFlight+1)
			}
			tc.stop(t, w, cancel)
			assertClean(t, s)
			if err := w.Commit("g", Overwrite); err == nil {
				t.Error("Commit after the stop succeeded")
			}
		})
	}
}

// TestWriterBucketGone: the bucket is removed while the writer uploads
// into it: the store's refusal of the next part is returned by Write or
// Commit, and the writer is undone (no spool file left; once the bucket
// is back, it holds nothing).
//
// (Aborting the multipart upload under the writer is no such failure on
// versitygw v1.8.0: it takes parts for an aborted upload and completes
// it.)
func TestWriterBucketGone(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	ctx := context.Background()
	w, err := s.NewWriter(ctx, WriterOptions{Key: "f"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	write(t, w, randomBytes(part+1, 5), 1<<20)
	if _, err := w.up.wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &s.bucket}); err != nil {
		t.Fatalf("DeleteBucket: %v", err)
	}
	_, err = w.Write(randomBytes(2*part, 6))
	if err == nil {
		err = w.Commit("f", Overwrite)
	}
	if err == nil || !strings.Contains(err.Error(), "uploading part") {
		t.Fatalf("Write and Commit into a removed bucket: %v, want a part upload's error", err)
	}
	if _, err2 := w.Write([]byte("x")); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("Write after the failure: %v, want the first error", err2)
	}
	if n := spoolFiles(t, s); n != 0 {
		t.Errorf("%d spool files left", n)
	}
	if _, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket}); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s)
}

// TestWriterPayloadSigned: on plain HTTP each write carries the SHA-256 of
// the bytes it sends as its signed payload hash, computed while they
// spooled; bytes that changed in the spool since are refused by the store
// (nothing is stored), as the hash is not taken from the spool at sending
// time.
func TestWriterPayloadSigned(t *testing.T) {
	t.Parallel()
	s, rec := testStore(t, part)
	var (
		mu  sync.Mutex
		bad []string
	)
	rec.mu.Lock()
	rec.around = func(op string, req *http.Request, send func(*http.Request) (*http.Response, error)) (*http.Response, error) {
		if op != "UploadPart" && op != "PutObject" {
			return send(req)
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(body)
		if got := req.Header.Get("X-Amz-Content-Sha256"); got != hex.EncodeToString(sum[:]) {
			mu.Lock()
			bad = append(bad, fmt.Sprintf("%s of %d bytes: X-Amz-Content-Sha256 %q", op, len(body), got))
			mu.Unlock()
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		return send(req)
	}
	rec.mu.Unlock()
	for _, size := range []int{1000, 2*part + 1} {
		data := randomBytes(size, 12)
		name := fmt.Sprintf("f%d", size)
		w, err := s.NewWriter(context.Background(), WriterOptions{Key: name})
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, data, 32<<10)
		if err := w.Commit(name, Overwrite); err != nil {
			t.Fatal(err)
		}
		if got, _ := object(t, s, name); !bytes.Equal(got, data) {
			t.Fatalf("object %s differs", name)
		}
	}
	mu.Lock()
	if len(bad) > 0 || rec.count("UploadPart") != 3 || rec.count("PutObject") != 1 {
		t.Errorf("writes not signed with their bytes' hash: %q (%d parts, %d puts)", bad, rec.count("UploadPart"), rec.count("PutObject"))
	}
	mu.Unlock()

	// The spool's bytes change on disk after they were written.
	w, err := s.NewWriter(context.Background(), WriterOptions{Key: "changed"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	write(t, w, randomBytes(1000, 13), 100)
	spools, err := filepath.Glob(filepath.Join(s.tempDir, "*"))
	if err != nil || len(spools) != 1 {
		t.Fatalf("spool files %q, %v", spools, err)
	}
	if err := os.WriteFile(spools[0], randomBytes(1000, 14), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit("changed", Overwrite); err == nil {
		t.Fatal("Commit stored bytes that changed in the spool")
	}
	assertClean(t, s, "site/f1000", fmt.Sprintf("site/f%d", 2*part+1))
}
