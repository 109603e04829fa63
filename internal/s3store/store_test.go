package s3store

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/reflexupload/caddy-reflex-upload/internal/enginetest"
)

// testStore starts a versitygw, makes a bucket in it and returns a Store
// over it with the prefix "site/", its spool files in a folder of the
// test's own.
func testStore(t testing.TB, partSize int64) (*Store, *recorder) {
	t.Helper()
	gw := enginetest.Versitygw(t)
	rec := &recorder{}
	s, err := New(Config{
		HTTPClient: &http.Client{Transport: rec},
		Endpoint:   gw.Endpoint,
		Region:     gw.Region,
		Bucket:     "uploads",
		Prefix:     "site",
		AccessKey:  gw.AccessKey,
		SecretKey:  gw.SecretKey,
		PathStyle:  true,
		PartSize:   partSize,
		TempDir:    t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("uploads")}); err != nil {
		t.Fatal(err)
	}
	rec.reset()
	return s, rec
}

// recorder is a transport that names each S3 operation it sends and can
// fail one of them.
type recorder struct {
	mu     sync.Mutex
	ops    []string
	ranges []string                    // the Range header of each GetObject
	fail   func(op string, n int) bool // n counts the operation's calls from 1
	// lose sends the request but loses the answer (a dropped connection).
	lose func(op string, n int) bool
	// miss answers 404 without sending (a HEAD that raced a writer).
	miss func(op string, n int) bool
	// around, when set, sends each request (send is the real transport):
	// it may hold it, or change its body.
	around func(op string, req *http.Request, send func(*http.Request) (*http.Response, error)) (*http.Response, error)
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	op := opName(req)
	r.mu.Lock()
	r.ops = append(r.ops, op)
	if op == "GetObject" {
		r.ranges = append(r.ranges, req.Header.Get("Range"))
	}
	n := 0
	for _, o := range r.ops {
		if o == op {
			n++
		}
	}
	fail := r.fail != nil && r.fail(op, n)
	lose := r.lose != nil && r.lose(op, n)
	miss := r.miss != nil && r.miss(op, n)
	around := r.around
	r.mu.Unlock()
	if around != nil && !miss && !lose && !fail {
		return around(op, req, http.DefaultTransport.RoundTrip)
	}
	if miss {
		return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Header: http.Header{},
			Body: http.NoBody, Request: req, ProtoMajor: 1, ProtoMinor: 1}, nil
	}
	if lose {
		res, err := http.DefaultTransport.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		return nil, fmt.Errorf("injected loss of the answer to %s", op)
	}
	if fail {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("injected failure of %s", op)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// opName names the S3 operation of a request.
func opName(req *http.Request) string {
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodPost && q.Has("uploads"):
		return "CreateMultipartUpload"
	case req.Method == http.MethodPost && q.Has("uploadId"):
		return "CompleteMultipartUpload"
	case req.Method == http.MethodPut && q.Has("uploadId") && req.Header.Get("X-Amz-Copy-Source") != "":
		return "UploadPartCopy"
	case req.Method == http.MethodPut && q.Has("uploadId"):
		return "UploadPart"
	case req.Method == http.MethodPut && req.Header.Get("X-Amz-Copy-Source") != "":
		return "CopyObject"
	case req.Method == http.MethodPut:
		return "PutObject"
	case req.Method == http.MethodDelete && q.Has("uploadId"):
		return "AbortMultipartUpload"
	case req.Method == http.MethodDelete:
		return "DeleteObject"
	case req.Method == http.MethodHead:
		return "HeadObject"
	case req.Method == http.MethodGet && q.Has("uploads"):
		return "ListMultipartUploads"
	case req.Method == http.MethodGet && q.Has("uploadId"):
		return "ListParts"
	case req.Method == http.MethodGet && q.Has("list-type"):
		return "ListObjectsV2"
	case req.Method == http.MethodGet && q.Get("x-id") == "GetObject":
		return "GetObject"
	}
	return req.Method + " " + req.URL.RawQuery
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = nil
	r.ranges = nil
}

// getRanges are the Range headers of the GetObjects since the last reset.
func (r *recorder) getRanges() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ranges)
}

// count is how many times op was sent since the last reset.
func (r *recorder) count(op string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, o := range r.ops {
		if o == op {
			n++
		}
	}
	return n
}

func (r *recorder) setFail(f func(op string, n int) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = f
}

// randomBytes is n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// object reads the whole object under name (relative to the store); ok is
// false when there is none.
func object(t *testing.T, s *Store, name string) (data []byte, ok bool) {
	t.Helper()
	out, err := s.client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.Key(name))})
	if isNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	data, err = io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data, true
}

// keys lists every key in the bucket, sorted.
func keys(t *testing.T, s *Store) []string {
	t.Helper()
	var all []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			all = append(all, *o.Key)
		}
	}
	slices.Sort(all)
	return all
}

// openUploads lists the keys of the bucket's open multipart uploads.
func openUploads(t *testing.T, s *Store) []string {
	t.Helper()
	out, err := s.client.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &s.bucket})
	if err != nil {
		t.Fatal(err)
	}
	var ks []string
	for _, u := range out.Uploads {
		ks = append(ks, *u.Key)
	}
	return ks
}

// assertClean fails when the bucket holds keys other than want, an open
// multipart upload, or the spool folder a file.
func assertClean(t *testing.T, s *Store, want ...string) {
	t.Helper()
	if got := keys(t, s); !slices.Equal(got, want) {
		t.Errorf("keys in the bucket: %q, want %q", got, want)
	}
	if ups := openUploads(t, s); len(ups) != 0 {
		t.Errorf("open multipart uploads: %q", ups)
	}
	spools, err := os.ReadDir(s.tempDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(spools) != 0 {
		t.Errorf("%d spool files left", len(spools))
	}
}

// put writes data through a writer in writes of step bytes.
func write(t *testing.T, w *Writer, data []byte, step int) {
	t.Helper()
	for off := 0; off < len(data); off += step {
		if _, err := w.Write(data[off:min(off+step, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if w.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", w.Size(), len(data))
	}
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		cfg    Config
		prefix string
		part   int64
		bad    bool
	}{
		{"defaults", Config{Bucket: "b", AccessKey: "a", SecretKey: "s"}, "", DefaultPartSize, false},
		{"prefix slashes", Config{Bucket: "b", AccessKey: "a", SecretKey: "s", Prefix: "/x/y/"}, "x/y/", DefaultPartSize, false},
		{"small part raised", Config{Bucket: "b", AccessKey: "a", SecretKey: "s", PartSize: 1024}, "", MinPartSize, false},
		{"part size", Config{Bucket: "b", AccessKey: "a", SecretKey: "s", PartSize: 16 << 20}, "", 16 << 20, false},
		{"part too big", Config{Bucket: "b", AccessKey: "a", SecretKey: "s", PartSize: 6 << 30}, "", 0, true},
		{"no bucket", Config{AccessKey: "a", SecretKey: "s"}, "", 0, true},
		{"no keys", Config{Bucket: "b"}, "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.bad {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.prefix != tc.prefix || s.partSize != tc.part {
				t.Errorf("prefix %q part %d, want %q %d", s.prefix, s.partSize, tc.prefix, tc.part)
			}
		})
	}
}

func TestEscapeKey(t *testing.T) {
	t.Parallel()
	if got, want := escapeKey("a b/c+d/é?#%"), "a%20b/c%2Bd/%C3%A9%3F%23%25"; got != want {
		t.Errorf("escapeKey = %q, want %q", got, want)
	}
}
