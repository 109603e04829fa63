package reflexupload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/reflexupload/caddy-reflex-upload/internal/enginetest"
)

// s3Bucket is the bucket of the S3 tests.
const s3Bucket = "site"

// s3Site is a whole Caddy with an upload endpoint per conflict policy, each
// keeping its files in the bucket under a key prefix of its own. The
// secret key comes from an environment placeholder.
const s3Site = `
reflex_upload {
	root ROOT/r
	prefix /r
	on_conflict reject
	max_size 10MiB
	storage s3 {
		bucket site
		endpoint ENDPOINT
		region us-east-1
		prefix r
		access_key ACCESS
		secret_key {env.REFLEX_TEST_S3_SECRET}
		path_style
	}
}
reflex_upload {
	root ROOT/n
	prefix /n
	on_conflict rename
	storage s3 {
		bucket site
		endpoint ENDPOINT
		prefix n
		access_key ACCESS
		secret_key {env.REFLEX_TEST_S3_SECRET}
		path_style
	}
}
reflex_upload {
	root ROOT/o
	prefix /o
	on_conflict overwrite
	chunk_expiry 2s
	storage s3 {
		bucket site
		endpoint ENDPOINT
		prefix o
		access_key ACCESS
		secret_key {env.REFLEX_TEST_S3_SECRET}
		path_style
	}
}
`

// startS3Site starts a versitygw with the bucket and a whole Caddy serving
// site (s3Site when ""), and returns a client of the bucket.
func startS3Site(t *testing.T, site string) *s3.Client {
	t.Helper()
	if site == "" {
		site = s3Site
	}
	c, site, secret := startBucket(t, site)
	t.Setenv("REFLEX_TEST_S3_SECRET", secret)
	startCaddy(t, site)
	return c
}

// startBucket starts a versitygw with the bucket, and returns a client of
// it, site with its ENDPOINT, ACCESS and ROOT filled in, and the secret
// key.
func startBucket(t *testing.T, site string) (*s3.Client, string, string) {
	t.Helper()
	gw := enginetest.Versitygw(t)
	c := s3.New(s3.Options{
		Region:       gw.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(gw.AccessKey, gw.SecretKey, ""),
		BaseEndpoint: aws.String(gw.Endpoint),
		UsePathStyle: true,
	})
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(s3Bucket)}); err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer("ENDPOINT", gw.Endpoint, "ACCESS", gw.AccessKey, "ROOT", t.TempDir())
	return c, r.Replace(site), gw.SecretKey
}

// bucketKeys lists every key in the bucket, sorted.
func bucketKeys(t *testing.T, c *s3.Client) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket)})
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
func openUploads(t *testing.T, c *s3.Client) []string {
	t.Helper()
	out, err := c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(s3Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, *u.Key)
	}
	return keys
}

// objectBytes reads an object of the bucket.
func objectBytes(t *testing.T, c *s3.Client, key string) []byte {
	t.Helper()
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GetObject %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertBucket checks that the bucket holds exactly keys and no open
// multipart upload.
func assertBucket(t *testing.T, c *s3.Client, keys ...string) {
	t.Helper()
	slices.Sort(keys)
	if got := bucketKeys(t, c); fmt.Sprint(got) != fmt.Sprint(keys) {
		t.Errorf("bucket holds %q; want %q", got, keys)
	}
	if got := openUploads(t, c); len(got) != 0 {
		t.Errorf("open multipart uploads: %q; want none", got)
	}
}

func TestS3Storage(t *testing.T) {
	c := startS3Site(t, "")
	big := randomBytes(t, 9<<20+77) // more than one 8 MiB part
	small := []byte("hello from the bucket\n")

	res, body := postFiles(t, "/r", nil, part{name: "big.bin", data: big}, part{name: "docs/a.txt", ctype: "text/plain", data: small})
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status = %d; body %s", res.StatusCode, body)
	}
	got := decode[uploadResult](t, body)
	if len(got.Files) != 2 || got.Files[0].SHA256 != sha256Hex(big) || got.Files[1].URL != "/r/docs/a.txt" {
		t.Errorf("files = %+v", got.Files)
	}
	assertBucket(t, c, "r/big.bin", "r/docs/a.txt")
	if !bytes.Equal(objectBytes(t, c, "r/big.bin"), big) || !bytes.Equal(objectBytes(t, c, "r/docs/a.txt"), small) {
		t.Fatal("the objects differ from the files sent")
	}

	t.Run("served with ranges, conditional requests and safe headers", func(t *testing.T) {
		res, body := get(t, "/r/big.bin")
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, big) {
			t.Fatalf("GET: status %d, %d bytes; want 200 and the bytes sent", res.StatusCode, len(body))
		}
		if v := res.Header.Get("X-Content-Type-Options"); v != "nosniff" {
			t.Errorf("X-Content-Type-Options = %q", v)
		}
		if v := res.Header.Get("Content-Disposition"); v != "attachment; filename=big.bin" {
			t.Errorf("Content-Disposition = %q", v)
		}
		etag := res.Header.Get("Etag")
		if etag == "" {
			t.Fatal("no ETag")
		}
		res, body = get(t, "/r/big.bin", "Range", "bytes=8388600-8388709")
		if res.StatusCode != http.StatusPartialContent || !bytes.Equal(body, big[8388600:8388710]) {
			t.Errorf("range: status %d, %d bytes; want 206 and bytes 8388600-8388709", res.StatusCode, len(body))
		}
		if v := res.Header.Get("Content-Range"); v != fmt.Sprintf("bytes 8388600-8388709/%d", len(big)) {
			t.Errorf("Content-Range = %q", v)
		}
		res, body = get(t, "/r/big.bin", "If-None-Match", etag)
		if res.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("If-None-Match: status %d, %d bytes; want 304 and none", res.StatusCode, len(body))
		}
		res, _ = get(t, "/r/docs/a.txt")
		if v := res.Header.Get("Content-Disposition"); v != "attachment; filename=a.txt" {
			t.Errorf("Content-Disposition of a.txt = %q", v)
		}
		res, _ = get(t, "/r/missing.txt")
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("missing file: status %d; want 404", res.StatusCode)
		}
	})

	t.Run("private folder never served", func(t *testing.T) {
		key := "r/.uploads/staging/secret"
		if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{
			Bucket: aws.String(s3Bucket), Key: aws.String(key), Body: strings.NewReader("secret"),
		}); err != nil {
			t.Fatal(err)
		}
		defer c.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(key)})
		for _, p := range []string{"/r/.uploads/staging/secret", "/r/.uploads/", "/r/%2Euploads/staging/secret"} {
			res, body := get(t, p)
			if res.StatusCode != http.StatusNotFound || bytes.Contains(body, []byte("secret")) {
				t.Errorf("GET %s: status %d, body %q; want 404", p, res.StatusCode, body)
			}
		}
	})

	t.Run("reject", func(t *testing.T) {
		res, body := postFiles(t, "/r", nil, part{name: "new.txt", data: []byte("new")}, part{name: "docs/a.txt", data: []byte("other")})
		assertError(t, res, body, http.StatusConflict, "file-exists", "docs/a.txt")
		assertBucket(t, c, "r/big.bin", "r/docs/a.txt")
		if !bytes.Equal(objectBytes(t, c, "r/docs/a.txt"), small) {
			t.Error("a.txt was replaced")
		}
	})

	t.Run("limits refused with nothing left", func(t *testing.T) {
		// The first file is whole, the second passes a part of 8 MiB
		// before the limit: neither may stay.
		res, body := postFiles(t, "/r", nil, part{name: "ok.txt", data: []byte("fine")}, part{name: "huge.bin", data: randomBytes(t, 10<<20+1)})
		assertError(t, res, body, http.StatusRequestEntityTooLarge, "file-too-large", "huge.bin")
		assertBucket(t, c, "r/big.bin", "r/docs/a.txt")
	})

	t.Run("rename", func(t *testing.T) {
		for i, want := range []string{"a.txt", "a (1).txt", "a (2).txt"} {
			data := []byte(fmt.Sprintf("version %d", i))
			res, body := postFiles(t, "/n", nil, part{name: "a.txt", data: data})
			if res.StatusCode != http.StatusCreated {
				t.Fatalf("status = %d; body %s", res.StatusCode, body)
			}
			if got := decode[uploadResult](t, body).Files[0].Path; got != want {
				t.Errorf("upload %d stored as %q; want %q", i, got, want)
			}
			if !bytes.Equal(objectBytes(t, c, "n/"+want), data) {
				t.Errorf("n/%s differs from what was sent", want)
			}
		}
		// Two files of one request with one name: both kept.
		res, body := postFiles(t, "/n", nil, part{name: "b.bin", data: big}, part{name: "b.bin", data: small})
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("status = %d; body %s", res.StatusCode, body)
		}
		if !bytes.Equal(objectBytes(t, c, "n/b.bin"), big) || !bytes.Equal(objectBytes(t, c, "n/b (1).bin"), small) {
			t.Error("b.bin and b (1).bin differ from the files sent")
		}
	})

	t.Run("overwrite", func(t *testing.T) {
		for _, data := range [][]byte{[]byte("first"), big, []byte("last")} {
			res, body := postFiles(t, "/o", nil, part{name: "a.txt", data: data})
			if res.StatusCode != http.StatusCreated {
				t.Fatalf("status = %d; body %s", res.StatusCode, body)
			}
			if !bytes.Equal(objectBytes(t, c, "o/a.txt"), data) {
				t.Fatal("o/a.txt is not the last file sent")
			}
		}
		res, body := get(t, "/o/a.txt")
		if res.StatusCode != http.StatusOK || string(body) != "last" {
			t.Errorf("GET: status %d, body %q; want 200 and the last file", res.StatusCode, body)
		}
	})

	t.Run("large files assembled under their name, staged only under rename", func(t *testing.T) {
		for _, tc := range []struct{ prefix, want string }{
			{"o", "o/mid.bin"},
			{"r", "r/mid.bin"},
			{"n", "n/.uploads/staging/"},
		} {
			// The body stops after a part and a bit: the multipart upload
			// is open, under the file's name or a staging name.
			head := "--XX\r\nContent-Disposition: form-data; name=\"files\"; filename=\"mid.bin\"\r\n\r\n"
			tail := "\r\n--XX--\r\n"
			pr, pw := io.Pipe()
			req, err := http.NewRequest(http.MethodPost, siteOf(t)+"/"+tc.prefix, pr)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "multipart/form-data; boundary=XX")
			req.ContentLength = int64(len(head) + len(big) + len(tail))
			answered := make(chan *http.Response, 1)
			go func() {
				res, err := client.Do(req)
				if err != nil {
					t.Error(err)
				}
				answered <- res
			}()
			pw.Write([]byte(head))
			pw.Write(big[:9<<20])
			var open []string
			for deadline := time.Now().Add(10 * time.Second); len(open) == 0 && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				open = openUploads(t, c)
			}
			if len(open) != 1 || !strings.HasPrefix(open[0], tc.want) || (tc.prefix != "n" && open[0] != tc.want) {
				t.Errorf("/%s: open multipart uploads %q mid-body; want one under %q", tc.prefix, open, tc.want)
			}
			pw.Write(big[9<<20:])
			pw.Write([]byte(tail))
			pw.Close()
			if res := <-answered; res == nil || res.StatusCode != http.StatusCreated {
				t.Fatalf("/%s: answer %v; want 201", tc.prefix, res)
			} else {
				res.Body.Close()
			}
			key := tc.prefix + "/mid.bin"
			if !bytes.Equal(objectBytes(t, c, key), big) {
				t.Errorf("%s differs from the file sent", key)
			}
			if _, err := c.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(key)}); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("failed upload leaves nothing", func(t *testing.T) {
		before := bucketKeys(t, c)
		// The client sends 9 MiB (a part goes to the store) and drops the
		// connection before the end of the body.
		head := "--XX\r\nContent-Disposition: form-data; name=\"files\"; filename=\"cut.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte(head))
			pw.Write(big)
			time.Sleep(200 * time.Millisecond)
			pw.CloseWithError(errors.New("client gave up"))
		}()
		req, err := http.NewRequest(http.MethodPost, siteOf(t)+"/r", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "multipart/form-data; boundary=XX")
		req.ContentLength = int64(len(head) + len(big) + 100)
		if res, err := client.Do(req); err == nil {
			res.Body.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			keys, open := bucketKeys(t, c), openUploads(t, c)
			if fmt.Sprint(keys) == fmt.Sprint(before) && len(open) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after a cut upload: bucket %q, open uploads %q; want %q and none", keys, open, before)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// The sweeper of the upload root aborts the multipart uploads older than
// chunk_expiry that a writer left (a process killed mid-upload), under its
// key prefix only.
func TestS3StorageJanitor(t *testing.T) {
	c := startS3Site(t, "")
	ctx := context.Background()
	var ids []string
	for _, key := range []string{"o/stale.bin", "elsewhere/kept.bin"} {
		out, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s3Bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, *out.UploadId)
	}
	defer c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s3Bucket), Key: aws.String("elsewhere/kept.bin"), UploadId: &ids[1]})
	deadline := time.Now().Add(10 * time.Second)
	for {
		open := openUploads(t, c)
		if fmt.Sprint(open) == "[elsewhere/kept.bin]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open multipart uploads %q 10s after their start; want only elsewhere/kept.bin (chunk_expiry 2s)", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// In forward mode, an app's refusal undoes the request: the objects it
// created are removed; an object that overwrite replaced keeps the new
// version (S3 cannot bring it back without a copy made beforehand).
func TestS3StorageForwardUndo(t *testing.T) {
	app := newApp(t)
	app.setStatus(http.StatusConflict)
	c := startS3Site(t, fmt.Sprintf(`reflex_upload {
	root ROOT
	mode forward
	on_conflict overwrite
	storage s3 {
		bucket site
		endpoint ENDPOINT
		prefix f
		access_key ACCESS
		secret_key {env.REFLEX_TEST_S3_SECRET}
		path_style
	}
}
reverse_proxy %s`, app.addr()))
	if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(s3Bucket), Key: aws.String("f/old.txt"), Body: strings.NewReader("old"),
	}); err != nil {
		t.Fatal(err)
	}
	res, body := postFiles(t, "/_upload", nil, part{name: "old.txt", data: []byte("new")}, part{name: "new.txt", data: randomBytes(t, 9<<20)})
	if res.StatusCode != http.StatusConflict || string(body) != "app says 409" {
		t.Fatalf("answer %d %q; want the app's 409", res.StatusCode, body)
	}
	assertBucket(t, c, "f/old.txt")
	if got := objectBytes(t, c, "f/old.txt"); string(got) != "new" {
		t.Errorf("f/old.txt holds %q; want the replacing file", got)
	}

	// A resumable upload the app refuses: its object is taken back and the
	// upload removed; one it accepts stays.
	data := randomBytes(t, 9<<20)
	loc := tusCreate(t, len(data), "tus.bin")
	res, body = tusPatch(t, loc, 0, data)
	if res.StatusCode != http.StatusConflict || string(body) != "app says 409" {
		t.Fatalf("tus answer %d %q; want the app's 409", res.StatusCode, body)
	}
	assertBucket(t, c, "f/old.txt")
	app.setStatus(http.StatusOK)
	loc = tusCreate(t, len(data), "tus.bin")
	res, body = tusPatch(t, loc, 0, data)
	assertOffset(t, res, body, http.StatusNoContent, len(data)) // accepted: the tus answer
	if !bytes.Equal(objectBytes(t, c, "f/tus.bin"), data) {
		t.Fatal("f/tus.bin differs")
	}
	assertBucket(t, c, "f/old.txt", "f/tus.bin", "f/.uploads/tus/"+strings.TrimPrefix(loc, tusEndpoint+"/")+".info")
}

func TestS3StorageCaddyfile(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"s3 {\nbucket b\nbucket c\n}", "bucket given twice"},
		{"s3 {\nbucket\n}", "bucket takes one value"},
		{"s3 {\nbucket b\npath_style yes\n}", "path_style takes no value"},
		{"s3 {\nbucket b\nsize 3\n}", `unknown option "size"`},
		{"s3 {\nregion x\n}", "bucket is required"},
		{"s3 extra", "wrong argument count"},
	} {
		var s S3Storage
		err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v; want one with %q", tc.in, err, tc.err)
		}
	}
	var s S3Storage
	in := "s3 {\nbucket b\nendpoint http://127.0.0.1:1\nregion eu\nprefix p/\naccess_key k\nsecret_key {env.X}\npath_style\n}"
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	want := S3Storage{Bucket: "b", Endpoint: "http://127.0.0.1:1", Region: "eu", Prefix: "p/", AccessKey: "k", SecretKey: "{env.X}", PathStyle: true}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("parsed %+v; want %+v", s, want)
	}
}
