package instances_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/internal/enginetest"
	"github.com/reflexupload/caddy-reflex-upload/internal/s3store"
)

// The S3 tests run versitygw, one redis-server, three Caddy instances (A,
// B, C) with `storage s3` on one bucket and `state redis`, and a fourth
// Caddy in front of them as the load balancer (reverse_proxy, round
// robin). Each instance has two upload endpoints on the bucket:
// /_upload (on_conflict reject, max_size 16 MiB) under the key prefix
// "site", and /renamed (on_conflict rename) under "renamed"; each answer
// carries an X-Instance header naming the instance.
//
// The load balancer tries another instance for 2 s when one cannot be
// reached, and leaves a failed one out for 30 s (what a site does, so that
// a client goes on through the others when one dies). Resumable uploads
// on this cluster are in s3tus_test.go.

const (
	s3Bucket = "uploads"
	// s3MaxSize is the max_size of /_upload.
	s3MaxSize = 16 * mib
	// s3Large is over one part (8 MiB): a multipart upload, staged and
	// copied under its name at commit.
	s3Large = 10*mib + 12345
)

// s3Cluster is the bucket, three instances and the load balancer.
type s3Cluster struct {
	s3    *s3.Client
	nodes []*instance
	lb    *instance
}

// s3Instance is one instance's Caddyfile: ADDR, NAME, ROOT, REDIS,
// ENDPOINT, REGION and ACCESS are replaced; the secret key comes from the
// environment.
const s3Instance = `{
	admin off
	auto_https off
	persist_config off
}

http://ADDR {
	header X-Instance NAME
	reflex_upload {
		root "ROOT/site"
		on_conflict reject
		max_size 16MiB
		state redis {
			address REDIS
			key_prefix e2e-site:
		}
		storage s3 {
			bucket uploads
			endpoint ENDPOINT
			region REGION
			prefix site
			access_key ACCESS
			secret_key {env.INSTANCES_TEST_S3_SECRET}
			path_style
		}
	}
	reflex_upload {
		root "ROOT/renamed"
		prefix /renamed
		on_conflict rename
		state redis {
			address REDIS
			key_prefix e2e-renamed:
		}
		storage s3 {
			bucket uploads
			endpoint ENDPOINT
			region REGION
			prefix renamed
			access_key ACCESS
			secret_key {env.INSTANCES_TEST_S3_SECRET}
			path_style
		}
	}
}
`

// startS3Cluster starts versitygw with an empty bucket, a redis-server,
// the three instances and the load balancer.
func startS3Cluster(t *testing.T) *s3Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	gw := enginetest.Versitygw(t)
	redisAddr := enginetest.Redis(t)
	st, err := s3store.New(s3store.Config{
		Endpoint: gw.Endpoint, Region: gw.Region, Bucket: s3Bucket,
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, PathStyle: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &s3Cluster{s3: st.Client()}
	if _, err := c.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s3Bucket)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("objects in the bucket: %q", c.keys(t))
		}
	})
	bin, err := caddyrun.Caddy()
	if err != nil {
		t.Fatalf("building Caddy: %v", err)
	}
	base := t.TempDir()
	root := filepath.Join(base, "shared-root")
	secret := "INSTANCES_TEST_S3_SECRET=" + gw.SecretKey
	var upstreams []string
	for i := range 3 {
		name := string(rune('A' + i))
		addr := caddyrun.FreeAddr(t)
		site := strings.NewReplacer("ADDR", addr, "NAME", name, "ROOT", root, "REDIS", redisAddr,
			"ENDPOINT", gw.Endpoint, "REGION", gw.Region, "ACCESS", gw.AccessKey).Replace(s3Instance)
		c.nodes = append(c.nodes, startCaddy(t, ctx, bin, base, name, addr, site, secret))
		upstreams = append(upstreams, addr)
	}
	lbAddr := caddyrun.FreeAddr(t)
	lbSite := fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n\n"+
		"http://%s {\n\treverse_proxy %s {\n\t\tlb_policy round_robin\n\t\tlb_try_duration 2s\n\t\tfail_duration 30s\n\t}\n}\n", lbAddr, strings.Join(upstreams, " "))
	c.lb = startCaddy(t, ctx, bin, base, "LB", lbAddr, lbSite)
	return c
}

// keys lists every key in the bucket (private ones included), sorted.
func (c *s3Cluster) keys(t *testing.T) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(c.s3, &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, *o.Key)
		}
	}
	slices.Sort(keys)
	return keys
}

// openUploads lists the keys of the bucket's open multipart uploads.
func (c *s3Cluster) openUploads(t *testing.T) []string {
	t.Helper()
	out, err := c.s3.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(s3Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, *u.Key)
	}
	return keys
}

// object reads an object of the bucket.
func (c *s3Cluster) object(t *testing.T, key string) []byte {
	t.Helper()
	out, err := c.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GetObject %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("GetObject %s: %v", key, err)
	}
	return b
}

// assertOnly waits (5 s at most: an abort may end just after its answer)
// until the bucket holds exactly the keys want (no other object, no
// staging object) and no open multipart upload.
func (c *s3Cluster) assertOnly(t *testing.T, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		keys, open := c.keys(t), c.openUploads(t)
		if slices.Equal(keys, want) && len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket holds %q with open multipart uploads %q; want %q and none open", keys, open, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// s3Result is the answer to a standard upload.
type s3Result struct {
	Files []struct {
		Name   string `json:"name"`
		Path   string `json:"path"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	} `json:"files"`
}

// postFiles sends a standard upload of files to path at n (the whole body
// sent while the answer is read: a refusal may come first) and returns
// the answer.
func postFiles(t *testing.T, n *instance, path string, files ...namedFile) (*http.Response, []byte) {
	t.Helper()
	body, ctype := multipartFiles(files...)
	return sendRaw(t, n, http.MethodPost, path, map[string]string{"Content-Type": ctype, tokenHeader: "alice"}, body)
}

// stored decodes the answer to an upload that must succeed.
func stored(t *testing.T, what string, res *http.Response, body []byte) s3Result {
	t.Helper()
	var r s3Result
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("%s: %d %s; want 201", what, res.StatusCode, body)
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%s: %v: %s", what, err, body)
	}
	return r
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestS3StandardThroughBalancer uploads through the load balancer (the
// three uploads land on A, B and C in turn): the objects are in the bucket
// byte-identical, and every instance, and the load balancer, serves them
// back with ranges, the safe headers and conditional requests.
func TestS3StandardThroughBalancer(t *testing.T) {
	c := startS3Cluster(t)
	files := map[string][]byte{
		"small.bin": randomBytes(200*kib, 1),
		"large.bin": randomBytes(s3Large, 2),
		"page.html": []byte("<html><script>alert(1)</script></html>"),
		"photo.bin": randomBytes(3*mib, 3),
	}
	requests := [][]string{{"small.bin", "large.bin"}, {"page.html"}, {"photo.bin"}}
	var served []string
	for _, names := range requests {
		var parts []namedFile
		for _, name := range names {
			parts = append(parts, namedFile{name, files[name]})
		}
		res, body := postFiles(t, c.lb, "/_upload", parts...)
		r := stored(t, "upload of "+strings.Join(names, ", ")+" through the load balancer", res, body)
		served = append(served, res.Header.Get("X-Instance"))
		if len(r.Files) != len(names) {
			t.Fatalf("answer to the upload of %v: %s", names, body)
		}
		for i, f := range r.Files {
			data := files[names[i]]
			if f.Path != names[i] || f.Size != int64(len(data)) || f.SHA256 != sha256Hex(data) {
				t.Errorf("answer for %s: %+v; want its path, size and sha256", names[i], f)
			}
		}
	}
	if got := slices.Sorted(slices.Values(served)); !slices.Equal(got, []string{"A", "B", "C"}) {
		t.Errorf("the three uploads were received by %q; want A, B and C once each", served)
	}
	t.Logf("the uploads through the load balancer were received by %v", served)

	// The bucket holds the files, byte-identical, and nothing else.
	var want []string
	for name, data := range files {
		want = append(want, "site/"+name)
		if got := c.object(t, "site/"+name); !bytes.Equal(got, data) {
			t.Errorf("object site/%s: %d bytes, not the %d sent", name, len(got), len(data))
		}
	}
	c.assertOnly(t, want...)

	// Served back by every instance, and through the load balancer (three
	// times: by each instance behind it).
	large := files["large.bin"]
	first, last := int64(8*mib-1000), int64(8*mib+999) // across the first part's end
	var etag, modified string
	for _, n := range append(slices.Clone(c.nodes), c.lb, c.lb, c.lb) {
		res, body := do(t, http.MethodGet, n.url("/_upload/large.bin"), map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", first, last)}, nil)
		if res.StatusCode != http.StatusPartialContent {
			t.Fatalf("ranged GET at %s: %d; want 206", n.name, res.StatusCode)
		}
		if cr := res.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", first, last, len(large)) {
			t.Errorf("ranged GET at %s: Content-Range %q", n.name, cr)
		}
		if !bytes.Equal(body, large[first:last+1]) {
			t.Errorf("ranged GET at %s: %d bytes, not the range's", n.name, len(body))
		}
		if etag == "" && modified == "" {
			etag, modified = res.Header.Get("ETag"), res.Header.Get("Last-Modified")
			if etag == "" && modified == "" {
				t.Fatalf("ranged GET at %s: neither ETag nor Last-Modified", n.name)
			}
		}
		for _, name := range []string{"large.bin", "page.html"} {
			res, body := do(t, http.MethodGet, n.url("/_upload/"+name), nil, nil)
			if res.StatusCode != http.StatusOK || !bytes.Equal(body, files[name]) {
				t.Errorf("GET %s at %s: %d, %d bytes; want 200 and the file", name, n.name, res.StatusCode, len(body))
			}
			if v := res.Header.Get("X-Content-Type-Options"); v != "nosniff" {
				t.Errorf("GET %s at %s: X-Content-Type-Options %q", name, n.name, v)
			}
			if v := res.Header.Get("Content-Disposition"); !strings.HasPrefix(v, "attachment") || !strings.Contains(v, name) {
				t.Errorf("GET %s at %s: Content-Disposition %q; want an attachment", name, n.name, v)
			}
		}
		if n == c.nodes[0] {
			t.Logf("validators: ETag %q, Last-Modified %q", etag, modified)
		}
		cond := map[string]string{"If-None-Match": etag}
		if etag == "" {
			cond = map[string]string{"If-Modified-Since": modified}
		}
		if res, body := do(t, http.MethodGet, n.url("/_upload/large.bin"), cond, nil); res.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("conditional GET at %s (%v): %d, %d bytes; want 304", n.name, cond, res.StatusCode, len(body))
		}
	}
	if res, _ := do(t, http.MethodGet, c.lb.url("/_upload/.uploads/"), nil, nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("GET of the private folder through the load balancer: %d; want 404", res.StatusCode)
	}
	c.assertOnly(t, want...)
}

// TestS3LimitsAndConflicts: a file over max_size after a good one is
// refused (413) and neither is stored; with reject the first object stays
// (409 at the other instances); with rename, one name uploaded at A, B and
// C at once is stored under three names. Nothing else is left in the
// bucket, no multipart upload open.
func TestS3LimitsAndConflicts(t *testing.T) {
	c := startS3Cluster(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]

	// All or nothing: the good file is not stored either; the large one's
	// multipart upload is aborted.
	for _, n := range []*instance{c.lb, b} {
		res, body := postFiles(t, n, "/_upload", namedFile{"good.bin", randomBytes(100*kib, 4)}, namedFile{"huge.bin", randomBytes(s3MaxSize+mib, 5)})
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("upload with a file over max_size at %s: %d %s; want 413", n.name, res.StatusCode, body)
		}
		assertJSON(t, "the answer to the file over max_size at "+n.name, body, `{"code": "file-too-large", "detail": "file is larger than 16777216 bytes", "file": "huge.bin"}`)
	}
	c.assertOnly(t)

	// reject: the first upload of a name wins; the others are refused and
	// the object is unchanged.
	v1 := randomBytes(300*kib, 6)
	res, body := postFiles(t, a, "/_upload", namedFile{"same.bin", v1})
	stored(t, "first upload of same.bin at A", res, body)
	for _, up := range []struct {
		n    *instance
		data []byte
	}{{b, randomBytes(300*kib, 7)}, {cc, randomBytes(s3Large, 8)}, {c.lb, []byte("tiny")}} {
		res, body := postFiles(t, up.n, "/_upload", namedFile{"same.bin", up.data})
		if res.StatusCode != http.StatusConflict {
			t.Fatalf("second upload of same.bin at %s: %d %s; want 409", up.n.name, res.StatusCode, body)
		}
		assertJSON(t, "second upload of same.bin at "+up.n.name, body, `{"code": "file-exists", "detail": "a file with this name exists already", "file": "same.bin"}`)
	}
	if got := c.object(t, "site/same.bin"); !bytes.Equal(got, v1) {
		t.Errorf("site/same.bin after the refused uploads: %d bytes, not the first upload's", len(got))
	}

	// rename: one name at A, B and C at once, one of them over a part.
	versions := [][]byte{randomBytes(500*kib, 9), randomBytes(s3Large, 10), randomBytes(2*mib, 11)}
	results := make([]s3Result, len(versions))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, ctype := multipartFiles(namedFile{"dup.bin", versions[i]})
			res, err := http.Post(n.url("/renamed"), ctype, bytes.NewReader(body))
			if err != nil {
				t.Errorf("upload of dup.bin at %s: %v", n.name, err)
				return
			}
			defer res.Body.Close()
			raw, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusCreated || json.Unmarshal(raw, &results[i]) != nil || len(results[i].Files) != 1 {
				t.Errorf("upload of dup.bin at %s: %d %s", n.name, res.StatusCode, raw)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var paths []string
	for i, r := range results {
		f := r.Files[0]
		paths = append(paths, f.Path)
		if got := c.object(t, "renamed/"+f.Path); !bytes.Equal(got, versions[i]) || f.SHA256 != sha256Hex(versions[i]) {
			t.Errorf("renamed/%s (stored by %s): %d bytes; want the %d bytes it sent", f.Path, c.nodes[i].name, len(got), len(versions[i]))
		}
	}
	t.Logf("the names given at A, B and C: %q", paths)
	slices.Sort(paths)
	if !slices.Equal(paths, []string{"dup (1).bin", "dup (2).bin", "dup.bin"}) {
		t.Errorf("the names given: %q; want dup.bin, dup (1).bin and dup (2).bin", paths)
	}
	c.assertOnly(t, "site/same.bin", "renamed/dup.bin", "renamed/dup (1).bin", "renamed/dup (2).bin")
}

// TestS3CancelThroughRedis paces an upload (over a part) to A: B reads its
// progress growing through Redis, a DELETE at C cancels it and A's client
// is answered 409 upload-cancelled within a second; nothing is stored, no
// multipart upload stays open.
func TestS3CancelThroughRedis(t *testing.T) {
	c := startS3Cluster(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	const id, token = "s3-cancel", "alice"
	up := startMultipart(t, a, id, token, "cancelled.bin", randomBytes(s3Large, 12))
	if err := up.write(256 * kib); err != nil {
		t.Fatal(err)
	}
	waitProgress(t, b, id, token, func(s snapshot) bool { return s.State == "uploading" })
	sending := make(chan struct{})
	go func() {
		// 9.5 MiB, then the client stalls: the upload cannot end first.
		defer close(sending)
		for up.sent < 9*mib+512*kib && up.write(256*kib) == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}()

	// B sees it grow past the first part (the multipart upload is open).
	var polled []int64
	for {
		s, body := progressOf(t, b, id, token)
		if s.State != "uploading" {
			t.Fatalf("progress at B while A receives: %s", body)
		}
		if len(polled) == 0 || polled[len(polled)-1] != s.Received {
			polled = append(polled, s.Received)
		}
		if s.Received > 9*mib {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(polled) < 3 || !slices.IsSorted(polled) {
		t.Errorf("received counts polled at B: %v; want at least 3, growing", polled)
	}
	t.Logf("received counts polled at B: %v", polled)
	// Its first part is in the bucket, in an open multipart upload.
	for deadline := time.Now().Add(5 * time.Second); len(c.openUploads(t)) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no open multipart upload while A receives more than a part")
		}
	}

	start := time.Now()
	res, body := do(t, http.MethodDelete, cc.url("/_upload/.uploads/"+id), map[string]string{tokenHeader: token}, nil)
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE at C: %d %s", res.StatusCode, body)
	}
	res, body = up.response(t)
	latency := time.Since(start)
	<-sending
	if res.StatusCode != http.StatusConflict {
		t.Fatalf("the uploader at A: %d %s; want 409", res.StatusCode, body)
	}
	assertJSON(t, "the uploader's answer", body, `{"code": "upload-cancelled", "detail": "the upload was cancelled"}`)
	if latency >= time.Second {
		t.Errorf("the uploader at A was answered %v after the DELETE at C; want under 1s", latency)
	}
	t.Logf("cancel latency (DELETE at C sent -> answer at A's client): %v", latency)
	if s, raw := progressOf(t, b, id, token); s.State != "cancelled" || s.Code != "upload-cancelled" {
		t.Errorf("progress at B after the cancel: %s", raw)
	}
	c.assertOnly(t)
}
