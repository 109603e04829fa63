package s3store

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

const part = MinPartSize

func TestWriterCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		size   int
		step   int
		key    bool // WriterOptions.Key set
		puts   int  // PutObject requests
		parts  int  // UploadPart requests
		copies int  // UploadPartCopy requests
	}{
		{"empty", 0, 1, false, 1, 0, 0},
		{"small", 1000, 7, false, 1, 0, 0},
		{"one whole part is one put", part, 64 << 10, true, 1, 0, 0},
		{"one byte over a part", part + 1, 64 << 10, true, 0, 2, 0},
		{"21 MiB in place", 21<<20 + 3, 32<<10 + 1, true, 0, 5, 0},
		{"21 MiB staged", 21<<20 + 3, 32<<10 + 1, false, 0, 5, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec := testStore(t, part)
			data := randomBytes(tc.size, uint64(tc.size))
			opts := WriterOptions{ContentType: "application/octet-stream"}
			if tc.key {
				opts.Key = "dir/file.bin"
			}
			w, err := s.NewWriter(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			if tc.size > 0 {
				write(t, w, data, tc.step)
			}
			if got, ok := object(t, s, "dir/file.bin"); ok {
				t.Fatalf("object visible before Commit (%d bytes)", len(got))
			}
			if err := w.Commit("dir/file.bin", Overwrite); err != nil {
				t.Fatal(err)
			}
			got, ok := object(t, s, "dir/file.bin")
			if !ok || !bytes.Equal(got, data) {
				t.Fatalf("object: present %v, %d bytes, equal %v; want %d bytes", ok, len(got), bytes.Equal(got, data), len(data))
			}
			assertClean(t, s, "site/dir/file.bin")
			for op, want := range map[string]int{"PutObject": tc.puts, "UploadPart": tc.parts, "UploadPartCopy": tc.copies} {
				if n := rec.count(op); n != want {
					t.Errorf("%s sent %d times, want %d", op, n, want)
				}
			}
			if tc.puts > 0 && rec.count("CreateMultipartUpload") != 0 {
				t.Error("a multipart upload was started for an object of at most one part")
			}
			if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
				t.Errorf("Write after Commit: %v, want ErrClosed", err)
			}
			if err := w.Abort(); err != nil {
				t.Errorf("Abort after Commit: %v", err)
			}
			if _, ok := object(t, s, "dir/file.bin"); !ok {
				t.Error("Abort after Commit removed the object")
			}
		})
	}
}

// TestWriterConflict covers the policies against an object that exists:
// overwrite replaces it, reject leaves it, and a writer made without a key
// commits under the next name without the bytes again.
func TestWriterConflict(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
		key  bool
	}{
		{"small", 3000, false},
		{"small keyed", 3000, true},
		{"large staged", 2*part + 100, false},
		{"large keyed", 2*part + 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec := testStore(t, part)
			old := []byte("the first upload")
			put(t, s, "a.bin", old, Overwrite)
			data := randomBytes(tc.size, 7)

			// Reject.
			opts := WriterOptions{}
			if tc.key {
				opts.Key = "a.bin"
			}
			w, err := s.NewWriter(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			write(t, w, data, 1<<20)
			if err := w.Commit("a.bin", Reject); !errors.Is(err, ErrExists) {
				t.Fatalf("Commit over an object under Reject: %v, want ErrExists", err)
			}
			if got, _ := object(t, s, "a.bin"); !bytes.Equal(got, old) {
				t.Fatalf("the existing object changed: %q", got[:min(len(got), 20)])
			}
			if tc.key {
				// A keyed writer cannot go elsewhere: it is undone.
				if err := w.Commit("a.bin", Overwrite); !errors.Is(err, ErrExists) {
					t.Errorf("Commit after a keyed ErrExists: %v, want the same error", err)
				}
				assertClean(t, s, "site/a.bin")
			} else {
				// The rename path: the next name, under Reject again.
				put(t, s, "a (1).bin", old, Overwrite)
				if err := w.Commit("a (1).bin", Reject); !errors.Is(err, ErrExists) {
					t.Fatalf("second name: %v, want ErrExists", err)
				}
				if err := w.Commit("a (2).bin", Reject); err != nil {
					t.Fatalf("third name: %v", err)
				}
				if got, _ := object(t, s, "a (2).bin"); !bytes.Equal(got, data) {
					t.Fatalf("renamed object: %d bytes, want %d, equal %v", len(got), len(data), bytes.Equal(got, data))
				}
				parts := 0
				if tc.size > part {
					parts = (tc.size + part - 1) / part
				}
				if n := rec.count("UploadPart"); n != parts {
					// Each part goes once; the next names are copies.
					t.Errorf("UploadPart sent %d times, want %d", n, parts)
				}
				assertClean(t, s, "site/a (1).bin", "site/a (2).bin", "site/a.bin")
			}

			// Overwrite.
			w2, err := s.NewWriter(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			write(t, w2, data, 1<<20)
			if err := w2.Commit("a.bin", Overwrite); err != nil {
				t.Fatal(err)
			}
			if got, _ := object(t, s, "a.bin"); !bytes.Equal(got, data) {
				t.Fatalf("overwritten object: %d bytes, want %d", len(got), len(data))
			}
		})
	}
}

// put stores data under name through a writer.
func put(t *testing.T, s *Store, name string, data []byte, policy Policy) {
	t.Helper()
	w, err := s.NewWriter(context.Background(), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, data, 1<<20)
	if err := w.Commit(name, policy); err != nil {
		t.Fatal(err)
	}
}

// TestWriterUndo: Abort, a failed request and a cancelled context leave
// nothing: no object, no open multipart upload, no staging object, no
// spool file.
func TestWriterUndo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		key  bool
		run  func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error
	}{
		{"abort before a part", true, func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error {
			write(t, w, randomBytes(1000, 1), 100)
			return w.Abort()
		}},
		{"abort after parts", true, func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error {
			write(t, w, randomBytes(3*part, 1), 1<<20)
			if len(openUploads(t, s)) != 1 {
				t.Fatal("no multipart upload open mid-way")
			}
			return w.Abort()
		}},
		{"abort after a staged commit lost", false, func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error {
			put(t, s, "taken", []byte("x"), Overwrite)
			write(t, w, randomBytes(2*part, 1), 1<<20)
			if err := w.Commit("taken", Reject); !errors.Is(err, ErrExists) {
				t.Fatalf("Commit: %v, want ErrExists", err)
			}
			return w.Abort()
		}},
		{"part upload fails", false, func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error {
			rec.setFail(func(op string, n int) bool { return op == "UploadPart" && n >= 2 })
			// The parts upload in the background: the failure comes with a
			// later Write or, at the latest, with Commit.
			_, err := w.Write(randomBytes(3*part, 1))
			if err == nil {
				err = w.Commit("f", Overwrite)
			}
			if err == nil {
				t.Fatal("Write and Commit succeeded with a failing part upload")
			}
			rec.setFail(nil)
			if _, err2 := w.Write([]byte("x")); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("Write after a failure: %v, want the first error", err2)
			}
			return nil
		}},
		{"complete fails", true, func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error {
			rec.setFail(func(op string, n int) bool { return op == "CompleteMultipartUpload" })
			write(t, w, randomBytes(2*part, 1), 1<<20)
			if err := w.Commit("f", Overwrite); err == nil {
				t.Fatal("Commit succeeded with a failing complete")
			}
			return nil
		}},
		{"put fails", true, func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error {
			rec.setFail(func(op string, n int) bool { return op == "PutObject" })
			write(t, w, randomBytes(100, 1), 10)
			if err := w.Commit("f", Overwrite); err == nil {
				t.Fatal("Commit succeeded with a failing put")
			}
			if err := w.Commit("f", Overwrite); err == nil {
				t.Fatal("Commit after a failure succeeded")
			}
			return nil
		}},
		{"context cancelled mid-way", true, func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error {
			write(t, w, randomBytes(2*part, 1), 1<<20)
			cancel()
			if _, err := w.Write([]byte("more")); !errors.Is(err, context.Canceled) {
				t.Fatalf("Write after cancel: %v, want context.Canceled", err)
			}
			return nil
		}},
		{"context cancelled before commit", false, func(t *testing.T, s *Store, rec *recorder, w *Writer, cancel context.CancelFunc) error {
			write(t, w, randomBytes(2*part+5, 1), 1<<20)
			cancel()
			if err := w.Commit("f", Overwrite); !errors.Is(err, context.Canceled) {
				t.Fatalf("Commit after cancel: %v, want context.Canceled", err)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec := testStore(t, part)
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
			if err := tc.run(t, s, rec, w, cancel); err != nil {
				t.Fatal(err)
			}
			rec.setFail(nil)
			var want []string
			if _, ok := object(t, s, "taken"); ok {
				want = []string{"site/taken"}
			}
			assertClean(t, s, want...)
			if err := w.Commit("g", Overwrite); err == nil {
				t.Error("Commit after the undo succeeded")
			}
		})
	}
}

func TestWriterPrivate(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Bucket: "b", AccessKey: "a", SecretKey: "s", TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewWriter(context.Background(), WriterOptions{Key: ".uploads/x"}); err == nil {
		t.Error("a writer for a private key was made")
	}
	w, err := s.NewWriter(context.Background(), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, name := range []string{".uploads", ".uploads/staging/x"} {
		if err := w.Commit(name, Overwrite); err == nil {
			t.Errorf("Commit(%q) succeeded", name)
		}
	}
}

// TestWriterPutRace covers the conditional PutObject when the HeadObject
// before it saw no object: another writer got there in between (the store
// answers 412, or drops the connection), or the answer to our own write
// was lost (then the object there is ours).
func TestWriterPutRace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
		lose bool
		want error
	}{
		{"raced, small body", 100, false, ErrExists},
		{"raced, body of megabytes", 3 << 20, false, ErrExists},
		{"own answer lost", 3 << 20, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec := testStore(t, part)
			old := []byte("the other writer's")
			if !tc.lose {
				put(t, s, "x", old, Overwrite)
			}
			data := randomBytes(tc.size, 4)
			w, err := s.NewWriter(context.Background(), WriterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			write(t, w, data, 1<<20)
			rec.reset()
			rec.mu.Lock()
			rec.miss = func(op string, n int) bool { return op == "HeadObject" && n == 1 }
			if tc.lose {
				rec.lose = func(op string, n int) bool { return op == "PutObject" }
			}
			rec.mu.Unlock()
			if err := w.Commit("x", Reject); !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("Commit: %v, want %v", err, tc.want)
			}
			if n := rec.count("PutObject"); n != 1 {
				t.Errorf("PutObject sent %d times, want once (a conditional write is not retried)", n)
			}
			got, _ := object(t, s, "x")
			if tc.lose && !bytes.Equal(got, data) || !tc.lose && !bytes.Equal(got, old) {
				t.Errorf("object x holds %d bytes", len(got))
			}
		})
	}
}

// TestWriterCompleteLost: the answer to a Complete that succeeded is lost;
// the commit still succeeds (the object's ETag is ours), in place and by
// copy, under both policies.
func TestWriterCompleteLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		key    bool
		policy Policy
	}{
		{"in place, reject", true, Reject},
		{"in place, overwrite", true, Overwrite},
		{"staged, reject", false, Reject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec := testStore(t, part)
			data := randomBytes(2*part+9, 8)
			opts := WriterOptions{}
			if tc.key {
				opts.Key = "y"
			}
			w, err := s.NewWriter(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			write(t, w, data, 1<<20)
			// The last Complete (the one under the final name) loses its answer.
			last := 1
			if !tc.key {
				last = 2
			}
			rec.mu.Lock()
			rec.lose = func(op string, n int) bool { return op == "CompleteMultipartUpload" && n == last }
			rec.mu.Unlock()
			if err := w.Commit("y", tc.policy); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			if got, _ := object(t, s, "y"); !bytes.Equal(got, data) {
				t.Fatalf("object: %d bytes, want %d", len(got), len(data))
			}
			assertClean(t, s, "site/y")
		})
	}
}
