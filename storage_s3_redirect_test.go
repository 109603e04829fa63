package reflexupload

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// s3RedirectSite has three endpoints on one key prefix of the bucket:
// /r answers with redirects valid a minute, /x with redirects valid a
// second, /s serves through Caddy (the headers to match).
const s3RedirectSite = `
reflex_upload {
	root ROOT/r
	prefix /r
	storage s3 {
		bucket site
		endpoint ENDPOINT
		prefix p
		access_key ACCESS
		secret_key SECRET
		path_style
		redirect 1m
	}
}
reflex_upload {
	root ROOT/x
	prefix /x
	storage s3 {
		bucket site
		endpoint ENDPOINT
		prefix p
		access_key ACCESS
		secret_key SECRET
		path_style
		redirect 1s
	}
}
reflex_upload {
	root ROOT/s
	prefix /s
	storage s3 {
		bucket site
		endpoint ENDPOINT
		prefix p
		access_key ACCESS
		secret_key SECRET
		path_style
	}
}
`

// noRedirects is a client that returns redirects instead of following them.
var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// fetch sends a request with a plain client (following no redirect) and
// returns the response with its whole body.
func fetch(t *testing.T, method, u string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(res.Body); err != nil {
		t.Fatal(err)
	}
	return res, body.Bytes()
}

// TestS3StorageRedirect: with redirect, GET and HEAD of a stored file
// answer a 307 to a presigned URL of the bucket that a plain client
// fetches (bytes, the headers a served file has, ranges) until it expires;
// anything that is not a stored file answers 404 without a redirect.
func TestS3StorageRedirect(t *testing.T) {
	t.Parallel()
	c, site, secret := startBucket(t, s3RedirectSite)
	startSite(t, strings.ReplaceAll(site, "SECRET", secret))
	big := randomBytes(t, 9<<20+77)
	files := map[string][]byte{
		"big.bin":      big,
		"page.html":    []byte("<script>alert(1)</script>"),
		"doc.pdf":      []byte("%PDF-1.4 not really"),
		"noext":        []byte("<html><script>alert(2)</script>"),
		"docs/a b.txt": []byte("hello from the bucket\n"),
	}
	var parts []part
	for name, data := range files {
		parts = append(parts, part{name: name, data: data})
	}
	if res, body := postFiles(t, "/r", nil, parts...); res.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %s", res.StatusCode, body)
	}
	base := siteOf(t)

	for name, data := range files {
		urlPath := (&url.URL{Path: "/" + name}).EscapedPath()
		res, body := fetch(t, http.MethodGet, base+"/r"+urlPath)
		loc := res.Header.Get("Location")
		if res.StatusCode != http.StatusTemporaryRedirect || loc == "" {
			t.Fatalf("GET /r/%s: %d, Location %q; want 307 and a URL", name, res.StatusCode, loc)
		}
		if v := res.Header.Get("Cache-Control"); v != "private, no-store" {
			t.Errorf("GET /r/%s: Cache-Control %q; want private, no-store", name, v)
		}
		if strings.Contains(loc, secret) {
			t.Errorf("GET /r/%s: the Location holds the secret key", name)
		}
		if len(body) > 0 && !bytes.Contains(body, []byte("Temporary Redirect")) {
			t.Errorf("GET /r/%s: body %q", name, body)
		}
		served, _ := fetch(t, http.MethodGet, base+"/s"+urlPath)
		got, body := fetch(t, http.MethodGet, loc)
		if got.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("GET of the Location of %s: %d, %d bytes; want 200 and the file", name, got.StatusCode, len(body))
		}
		for _, h := range []string{"Content-Type", "Content-Disposition"} {
			if got.Header.Get(h) != served.Header.Get(h) {
				t.Errorf("%s from the bucket: %s %q; served through Caddy: %q", name, h, got.Header.Get(h), served.Header.Get(h))
			}
		}
	}
	// The headers above match the served ones; these are the values.
	for name, want := range map[string][2]string{
		"page.html":    {"text/html; charset=utf-8", "attachment; filename=page.html"},
		"noext":        {"application/octet-stream", "attachment; filename=noext"},
		"doc.pdf":      {"application/pdf", ""},
		"docs/a b.txt": {"text/plain; charset=utf-8", `attachment; filename="a b.txt"`},
	} {
		res, _ := fetch(t, http.MethodGet, base+"/r/"+strings.ReplaceAll(name, " ", "%20"))
		got, _ := fetch(t, http.MethodGet, res.Header.Get("Location"))
		if ct, cd := got.Header.Get("Content-Type"), got.Header.Get("Content-Disposition"); ct != want[0] || cd != want[1] {
			t.Errorf("%s from the bucket: Content-Type %q, Content-Disposition %q; want %q, %q", name, ct, cd, want[0], want[1])
		}
	}

	t.Run("ranges", func(t *testing.T) {
		res, _ := fetch(t, http.MethodGet, base+"/r/big.bin")
		got, body := fetch(t, http.MethodGet, res.Header.Get("Location"), "Range", "bytes=8388600-8388709")
		if got.StatusCode != http.StatusPartialContent || !bytes.Equal(body, big[8388600:8388710]) {
			t.Errorf("ranged GET of the Location: %d, %d bytes; want 206 and bytes 8388600-8388709", got.StatusCode, len(body))
		}
		if v := got.Header.Get("Content-Range"); v != fmt.Sprintf("bytes 8388600-8388709/%d", len(big)) {
			t.Errorf("Content-Range = %q", v)
		}
		// A client that follows the redirect keeps its Range.
		res, body = get(t, "/r/big.bin", "Range", "bytes=100-199")
		if res.StatusCode != http.StatusPartialContent || !bytes.Equal(body, big[100:200]) {
			t.Errorf("ranged GET through the redirect: %d, %d bytes; want 206 and bytes 100-199", res.StatusCode, len(body))
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		res, body := fetch(t, http.MethodHead, base+"/r/page.html")
		loc := res.Header.Get("Location")
		if res.StatusCode != http.StatusTemporaryRedirect || loc == "" || len(body) != 0 {
			t.Fatalf("HEAD: %d, Location %q; want 307 and a URL", res.StatusCode, loc)
		}
		got, body := fetch(t, http.MethodHead, loc)
		if got.StatusCode != http.StatusOK || got.ContentLength != int64(len(files["page.html"])) || len(body) != 0 {
			t.Errorf("HEAD of the Location: %d, length %d; want 200 and %d", got.StatusCode, got.ContentLength, len(files["page.html"]))
		}
		if v := got.Header.Get("Content-Disposition"); v != "attachment; filename=page.html" {
			t.Errorf("HEAD of the Location: Content-Disposition %q", v)
		}
	})

	t.Run("not a stored file: 404, no redirect", func(t *testing.T) {
		ctx := context.Background()
		for _, key := range []string{"p/.uploads/staging/secret", "p/docs/.uploads/secret", "secret-outside"} {
			if _, err := c.PutObject(ctx, &s3.PutObjectInput{
				Bucket: aws.String(s3Bucket), Key: aws.String(key), Body: strings.NewReader("secret"),
			}); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []string{
			"/r/missing.txt", "/r/docs", "/r/docs/", "/r", "/r/",
			"/r/.uploads/staging/secret", "/r/%2Euploads/staging/secret", "/r/.UPLOADS/staging/secret",
			"/r/docs/.uploads/secret", "/r/../secret-outside", "/r/docs/../../secret-outside",
		} {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				res, body := fetch(t, method, base+p)
				if res.StatusCode != http.StatusNotFound || res.Header.Get("Location") != "" || bytes.Contains(body, []byte("secret")) {
					t.Errorf("%s %s: %d, Location %q; want 404 and none", method, p, res.StatusCode, res.Header.Get("Location"))
				}
			}
		}
	})

	t.Run("expired URL refused by the store", func(t *testing.T) {
		res, _ := fetch(t, http.MethodGet, base+"/x/docs/a%20b.txt")
		loc := res.Header.Get("Location")
		if res.StatusCode != http.StatusTemporaryRedirect {
			t.Fatalf("GET /x/docs/a%%20b.txt: %d; want 307", res.StatusCode)
		}
		if got, body := fetch(t, http.MethodGet, loc); got.StatusCode != http.StatusOK || !bytes.Equal(body, files["docs/a b.txt"]) {
			t.Fatalf("the Location within its second: %d %q", got.StatusCode, body)
		}
		time.Sleep(2100 * time.Millisecond)
		if got, body := fetch(t, http.MethodGet, loc); got.StatusCode != http.StatusForbidden || bytes.Contains(body, files["docs/a b.txt"]) {
			t.Errorf("the Location after its ttl: %d %q; want 403", got.StatusCode, body)
		}
	})
}

func TestS3StorageRedirectOption(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"s3 {\nbucket b\nredirect\n}", "redirect takes one duration"},
		{"s3 {\nbucket b\nredirect 1m 2m\n}", "redirect takes one duration"},
		{"s3 {\nbucket b\nredirect soon\n}", "parsing redirect"},
		{"s3 {\nbucket b\nredirect 1m\nredirect 2m\n}", "redirect given twice"},
	} {
		var s S3Storage
		err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v; want one with %q", tc.in, err, tc.err)
		}
	}
	var s S3Storage
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("s3 {\nbucket b\nredirect 90s\n}")); err != nil {
		t.Fatal(err)
	}
	if s.Redirect != caddy.Duration(90*time.Second) {
		t.Errorf("redirect 90s parsed as %v", time.Duration(s.Redirect))
	}

	for _, tc := range []struct {
		ttl time.Duration
		ok  bool
	}{{0, true}, {time.Second, true}, {7 * 24 * time.Hour, true}, {500 * time.Millisecond, false}, {-time.Minute, false}, {7*24*time.Hour + time.Second, false}} {
		s := S3Storage{Bucket: "b", AccessKey: "k", SecretKey: "s", Redirect: caddy.Duration(tc.ttl)}
		err := s.Provision(caddy.Context{})
		if (err == nil) != tc.ok {
			t.Errorf("redirect %v: provisioning error %v; want ok %v", tc.ttl, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "from 1s to 7 days") {
			t.Errorf("redirect %v: error %q does not say the bounds", tc.ttl, err)
		}
	}
}
