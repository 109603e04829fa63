package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// fsStore is a store holding a few files, one of several parts, and a
// private object.
func fsStore(t *testing.T) (*Store, *recorder, []byte) {
	t.Helper()
	s, rec := testStore(t, part)
	big := randomBytes(2*part+12345, 3)
	put(t, s, "big.bin", big, Overwrite)
	put(t, s, "a.txt", []byte("hello"), Overwrite)
	put(t, s, "dir/sub/c.txt", []byte("deep"), Overwrite)
	put(t, s, "dir/b.txt", []byte("bee"), Overwrite)
	if _, err := s.client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: &s.bucket, Key: aws.String(s.Key(".uploads/secret")), Body: strings.NewReader("private"),
	}); err != nil {
		t.Fatal(err)
	}
	rec.reset()
	return s, rec, big
}

// TestFSStandard runs the standard library's checks of an fs.FS over a few
// small files (it reads at every offset, one GET each: not for big.bin).
func TestFSStandard(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	put(t, s, "a.txt", []byte("hello, world"), Overwrite)
	put(t, s, "dir/sub/c.txt", []byte("deep"), Overwrite)
	put(t, s, "dir/b.txt", []byte("bee"), Overwrite)
	if err := fstest.TestFS(s.FS(context.Background()), "a.txt", "dir/b.txt", "dir/sub/c.txt"); err != nil {
		t.Fatal(err)
	}
}

func TestFSStatAndPrivate(t *testing.T) {
	t.Parallel()
	s, _, big := fsStore(t)
	fsys := s.FS(context.Background())
	for _, tc := range []struct {
		name string
		size int64
		dir  bool
		err  error
	}{
		{"big.bin", int64(len(big)), false, nil},
		{"a.txt", 5, false, nil},
		{"dir", 0, true, nil},
		{"dir/sub", 0, true, nil},
		{".", 0, true, nil},
		{"missing", 0, false, fs.ErrNotExist},
		{"dir/missing", 0, false, fs.ErrNotExist},
		{".uploads", 0, false, fs.ErrNotExist},
		{".uploads/secret", 0, false, fs.ErrNotExist},
		{"../x", 0, false, fs.ErrInvalid},
		{"/a.txt", 0, false, fs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fi, err := fs.Stat(fsys, tc.name)
			_, openErr := fsys.Open(tc.name)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !errors.Is(openErr, tc.err) {
					t.Fatalf("Stat: %v, Open: %v; want %v", err, openErr, tc.err)
				}
				return
			}
			if err != nil || openErr != nil {
				t.Fatalf("Stat: %v, Open: %v", err, openErr)
			}
			if fi.Size() != tc.size || fi.IsDir() != tc.dir {
				t.Errorf("size %d dir %v, want %d %v", fi.Size(), fi.IsDir(), tc.size, tc.dir)
			}
			if !tc.dir && time.Since(fi.ModTime()).Abs() > time.Minute {
				t.Errorf("modtime %v is not about now", fi.ModTime())
			}
		})
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "a.txt big.bin dir" {
		t.Errorf("root lists %q, want the private folder hidden", got)
	}
}

// TestFSRanges reads ranges with Seek and Read, and with ReadAt through an
// io.SectionReader, and counts the GETs.
func TestFSRanges(t *testing.T) {
	t.Parallel()
	s, rec, big := fsStore(t)
	f, err := s.FS(context.Background()).Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs := f.(io.ReadSeeker)
	size := int64(len(big))
	for _, r := range []struct{ off, n int64 }{{0, 10}, {size - 10, 10}, {part - 3, 7}, {12345, 100000}, {0, size}} {
		rec.reset()
		if _, err := rs.Seek(r.off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, r.n)
		if _, err := io.ReadFull(rs, got); err != nil {
			t.Fatalf("range %d+%d: %v", r.off, r.n, err)
		}
		if !bytes.Equal(got, big[r.off:r.off+r.n]) {
			t.Fatalf("range %d+%d differs", r.off, r.n)
		}
		if ranges := rec.getRanges(); ranges[0] != fmt.Sprintf("bytes=%d-%d", r.off, r.off+r.n-1) {
			t.Errorf("range %d+%d: first GET asks for %q", r.off, r.n, ranges[0])
		}
	}
	if n, err := rs.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read at the end: %d, %v; want 0, EOF", n, err)
	}

	// A whole read in 32 KiB reads takes few GETs, each continuing the last.
	rec.reset()
	rs.Seek(0, io.SeekStart)
	var buf bytes.Buffer
	if _, err := io.CopyBuffer(&buf, struct{ io.Reader }{rs}, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), big) {
		t.Fatal("sequential read differs")
	}
	if n := len(rec.getRanges()); n > 12 {
		t.Errorf("%d GETs for a sequential read of %d bytes: %q", n, size, rec.getRanges())
	}

	// ReadAt, as io.SectionReader uses it.
	sr := io.NewSectionReader(f.(io.ReaderAt), part-100, 300)
	got, err := io.ReadAll(sr)
	if err != nil || !bytes.Equal(got, big[part-100:part+200]) {
		t.Fatalf("section: %v, equal %v", err, bytes.Equal(got, big[part-100:part+200]))
	}
	tail := make([]byte, 20)
	if n, err := f.(io.ReaderAt).ReadAt(tail, size-10); n != 10 || err != io.EOF || !bytes.Equal(tail[:10], big[size-10:]) {
		t.Errorf("ReadAt past the end: %d, %v", n, err)
	}
}

// TestFSReplaced: an object replaced between Open and Read fails the read
// rather than mixing two versions.
func TestFSReplaced(t *testing.T) {
	t.Parallel()
	s, _, _ := fsStore(t)
	f, err := s.FS(context.Background()).Open("a.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	put(t, s, "a.txt", []byte("HELLO"), Overwrite)
	if b, err := io.ReadAll(f); err == nil {
		t.Errorf("read %q from a replaced object", b)
	}
}

// TestFSFileServer serves the FS with net/http's file server (which Caddy's
// mirrors): ranges, conditional requests, the private folder.
func TestFSFileServer(t *testing.T) {
	t.Parallel()
	s, _, big := fsStore(t)
	srv := httptest.NewServer(http.FileServerFS(s.FS(context.Background())))
	defer srv.Close()
	get := func(path string, header ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for i := 0; i < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}
	res, b := get("/big.bin", "Range", "bytes=100-199")
	if res.StatusCode != http.StatusPartialContent || !bytes.Equal(b, big[100:200]) {
		t.Errorf("range: %d, %d bytes", res.StatusCode, len(b))
	}
	if cr := res.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes 100-199/%d", len(big)) {
		t.Errorf("Content-Range %q", cr)
	}
	res, b = get("/big.bin")
	if res.StatusCode != http.StatusOK || !bytes.Equal(b, big) {
		t.Errorf("whole: %d, %d bytes", res.StatusCode, len(b))
	}
	lm := res.Header.Get("Last-Modified")
	if res, _ := get("/big.bin", "If-Modified-Since", lm); res.StatusCode != http.StatusNotModified {
		t.Errorf("If-Modified-Since: %d, want 304", res.StatusCode)
	}
	for _, p := range []string{"/.uploads/secret", "/.uploads/", "/missing"} {
		if res, _ := get(p); res.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, res.StatusCode)
		}
	}
}

func TestPresignGet(t *testing.T) {
	t.Parallel()
	s, _, _ := fsStore(t)
	ctx := context.Background()
	u, err := s.PresignGet(ctx, "dir/b.txt", time.Minute, PresignOptions{ContentDisposition: "attachment", ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(b) != "bee" {
		t.Errorf("presigned GET: %d %q", res.StatusCode, b)
	}
	if cd := res.Header.Get("Content-Disposition"); cd != "attachment" {
		t.Errorf("Content-Disposition %q", cd)
	}
	// The URL is the credential: tampered, it is refused.
	res, err = http.Get(strings.Replace(u, "dir/b.txt", "a.txt", 1))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("tampered presigned GET: %d, want 403", res.StatusCode)
	}
	for _, name := range []string{".uploads/secret", ".uploads", "../x", "."} {
		if _, err := s.PresignGet(ctx, name, time.Minute, PresignOptions{}); err == nil {
			t.Errorf("presigned %q", name)
		}
	}
}

// TestPresignFile: a presigned URL is made only for a stored file (after
// one HeadObject), works with a plain client for its method, with the
// headers asked for and ranges, and the store refuses it once expired.
func TestPresignFile(t *testing.T) {
	t.Parallel()
	s, rec, big := fsStore(t)
	ctx := context.Background()
	opts := PresignOptions{ContentDisposition: `attachment; filename="big.bin"`, ContentType: "application/octet-stream"}
	fetch := func(method, u string, header ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}

	u, err := s.PresignFile(ctx, http.MethodGet, "big.bin", time.Minute, opts)
	if err != nil {
		t.Fatal(err)
	}
	if h, g, l := rec.count("HeadObject"), rec.count("GetObject"), rec.count("ListObjectsV2"); h != 1 || g != 0 || l != 0 {
		t.Errorf("presigning sent %d HeadObject, %d GetObject, %d ListObjectsV2; want one HeadObject", h, g, l)
	}
	res, body := fetch(http.MethodGet, u)
	if res.StatusCode != http.StatusOK || !bytes.Equal(body, big) {
		t.Fatalf("presigned GET: %d, %d bytes; want 200 and the file", res.StatusCode, len(body))
	}
	if v := res.Header.Get("Content-Disposition"); v != opts.ContentDisposition {
		t.Errorf("Content-Disposition %q; want %q", v, opts.ContentDisposition)
	}
	if v := res.Header.Get("Content-Type"); v != opts.ContentType {
		t.Errorf("Content-Type %q; want %q", v, opts.ContentType)
	}
	res, body = fetch(http.MethodGet, u, "Range", "bytes=100-199")
	if res.StatusCode != http.StatusPartialContent || !bytes.Equal(body, big[100:200]) {
		t.Errorf("presigned ranged GET: %d, %d bytes; want 206 and bytes 100-199", res.StatusCode, len(body))
	}
	if res, _ := fetch(http.MethodHead, u); res.StatusCode != http.StatusForbidden {
		t.Errorf("HEAD of a URL signed for GET: %d; want 403", res.StatusCode)
	}

	hu, err := s.PresignFile(ctx, http.MethodHead, "a.txt", time.Minute, PresignOptions{ContentType: "text/plain; charset=utf-8", ContentDisposition: "attachment"})
	if err != nil {
		t.Fatal(err)
	}
	res, body = fetch(http.MethodHead, hu)
	if res.StatusCode != http.StatusOK || len(body) != 0 || res.ContentLength != 5 {
		t.Errorf("presigned HEAD: %d, length %d, %d bytes of body; want 200, 5, none", res.StatusCode, res.ContentLength, len(body))
	}
	if ct, cd := res.Header.Get("Content-Type"), res.Header.Get("Content-Disposition"); ct != "text/plain; charset=utf-8" || cd != "attachment" {
		t.Errorf("presigned HEAD: Content-Type %q, Content-Disposition %q", ct, cd)
	}

	for _, name := range []string{"missing.txt", "dir", "dir/sub", ".uploads/secret", ".uploads", "../x", ".", "/a.txt", "a.txt/"} {
		if u, err := s.PresignFile(ctx, http.MethodGet, name, time.Minute, opts); !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("PresignFile(%q): %q, %v; want not found", name, u, err)
		}
	}
	for _, ttl := range []time.Duration{0, -time.Minute, 500 * time.Millisecond, MaxPresignTTL + time.Second} {
		if u, err := s.PresignFile(ctx, http.MethodGet, "a.txt", ttl, opts); err == nil {
			t.Errorf("presigned for %v: %q", ttl, u)
		}
	}
	if _, err := s.PresignFile(ctx, http.MethodPut, "a.txt", time.Minute, opts); err == nil {
		t.Error("presigned a PUT")
	}

	// Expired: the store refuses it.
	u, err = s.PresignFile(ctx, http.MethodGet, "a.txt", time.Second, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res, body := fetch(http.MethodGet, u); res.StatusCode != http.StatusOK || string(body) != "hello" {
		t.Fatalf("presigned GET within its second: %d %q", res.StatusCode, body)
	}
	time.Sleep(2100 * time.Millisecond)
	if res, body := fetch(http.MethodGet, u); res.StatusCode != http.StatusForbidden || bytes.Contains(body, []byte("hello")) {
		t.Errorf("presigned GET after its ttl: %d %q; want 403", res.StatusCode, body)
	}
}
