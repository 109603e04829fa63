package reflexupload

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/store"
)

// part is one part of a multipart body: a file when name is set.
type part struct {
	field string
	name  string
	ctype string
	data  []byte
	value string // a text field when name is ""
	// disposition, when set, is sent as the Content-Disposition as it is.
	disposition string
}

// quoteParam quotes a header parameter as Go's multipart.Writer does.
func quoteParam(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// multipartBody encodes parts as multipart/form-data.
func multipartBody(t *testing.T, parts ...part) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		field := p.field
		if field == "" {
			field = "files"
		}
		var w io.Writer
		var err error
		if p.name == "" {
			w, err = mw.CreateFormField(field)
			if err == nil {
				_, err = io.WriteString(w, p.value)
			}
		} else {
			h := textproto.MIMEHeader{}
			h.Set("Content-Disposition", "form-data; name="+quoteParam(field)+"; filename="+quoteParam(p.name))
			if p.disposition != "" {
				h.Set("Content-Disposition", p.disposition)
			}
			ctype := p.ctype
			if ctype == "" {
				ctype = "application/octet-stream"
			}
			h.Set("Content-Type", ctype)
			w, err = mw.CreatePart(h)
			if err == nil {
				_, err = w.Write(p.data)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

var client = &http.Client{Timeout: 30 * time.Second}

// do sends a request and returns the response with its whole body.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading response of %s %s: %v", req.Method, req.URL, err)
	}
	return res, body
}

// postFiles posts parts to the upload endpoint at path.
func postFiles(t *testing.T, path string, header http.Header, parts ...part) (*http.Response, []byte) {
	t.Helper()
	body, ctype := multipartBody(t, parts...)
	req, err := http.NewRequest(http.MethodPost, siteOf(t)+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	for k, v := range header {
		req.Header[k] = v
	}
	return do(t, req)
}

func get(t *testing.T, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, siteOf(t)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, req)
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("response is not the expected JSON: %v\n%s", err, body)
	}
	return v
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// storedFiles lists every file under root as root-relative slash paths, the
// private folder included.
func storedFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertStored fails unless the files under root are exactly want.
func assertStored(t *testing.T, root string, want ...string) {
	t.Helper()
	got := storedFiles(t, root)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("files under the root:\n%q\nwant:\n%q", got, want)
	}
}

// waitStored waits (bounded) until the files under root are exactly want:
// for clean-up that happens after the client has its answer.
func waitStored(t *testing.T, root string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Join(storedFiles(t, root), "\n") == strings.Join(want, "\n") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	assertStored(t, root, want...)
}

func assertError(t *testing.T, res *http.Response, body []byte, status int, code, file string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status = %d; want %d; body %s", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	e := decode[errorBody](t, body)
	if e.Code != code || e.File != file || e.Detail == "" {
		t.Fatalf("error = %+v; want code %q, file %q and a detail", e, code, file)
	}
}

func TestE2EStoreAndServe(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	big := randomBytes(t, 5<<20+123)
	png := pngBytes()
	res, body := postFiles(t, "/_upload", nil,
		part{name: "big.bin", data: big},
		part{name: "photos/2026/a.png", ctype: "image/png", data: png},
		part{field: "note", value: "hello"},
		part{field: "empty", name: "empty.txt", ctype: "text/plain", data: nil},
	)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status = %d; body %s", res.StatusCode, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	got := decode[uploadResult](t, body)
	if len(got.UploadID) != 32 {
		t.Errorf("upload_id = %q; want 32 hex digits", got.UploadID)
	}
	want := []storedFile{
		{Field: "files", Name: "big.bin", Path: "big.bin", URL: "/_upload/big.bin", Size: int64(len(big)),
			ContentType: "application/octet-stream", SHA256: sha256Hex(big)},
		{Field: "files", Name: "a.png", Path: "photos/2026/a.png", URL: "/_upload/photos/2026/a.png", Size: int64(len(png)),
			ContentType: "image/png", SHA256: sha256Hex(png)},
		{Field: "empty", Name: "empty.txt", Path: "empty.txt", URL: "/_upload/empty.txt", Size: 0,
			ContentType: "text/plain", SHA256: sha256Hex(nil)},
	}
	if fmt.Sprint(got.Files) != fmt.Sprint(want) {
		t.Errorf("files =\n%+v\nwant\n%+v", got.Files, want)
	}
	if fmt.Sprint(got.Fields) != fmt.Sprint(map[string][]string{"note": {"hello"}}) {
		t.Errorf("fields = %v", got.Fields)
	}
	assertStored(t, root, "big.bin", "empty.txt", "photos/2026/a.png")
	for name, data := range map[string][]byte{"big.bin": big, "photos/2026/a.png": png} {
		onDisk, err := os.ReadFile(filepath.Join(root, name))
		if err != nil || !bytes.Equal(onDisk, data) {
			t.Errorf("%s on disk differs from what was sent (err %v)", name, err)
		}
	}

	t.Run("served back", func(t *testing.T) {
		res, body := get(t, "/_upload/big.bin")
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, big) {
			t.Fatalf("GET status %d, %d bytes; want 200 and the bytes sent", res.StatusCode, len(body))
		}
		if v := res.Header.Get("X-Content-Type-Options"); v != "nosniff" {
			t.Errorf("X-Content-Type-Options = %q", v)
		}
		if v := res.Header.Get("Content-Disposition"); v != `attachment; filename=big.bin` {
			t.Errorf("Content-Disposition = %q", v)
		}
		etag := res.Header.Get("Etag")
		if etag == "" {
			t.Fatal("no ETag")
		}
		res, body = get(t, "/_upload/big.bin", "If-None-Match", etag)
		if res.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("conditional GET status %d; want 304", res.StatusCode)
		}
		res, body = get(t, "/_upload/big.bin", "Range", "bytes=100-199")
		if res.StatusCode != http.StatusPartialContent || !bytes.Equal(body, big[100:200]) {
			t.Errorf("range GET status %d, body %d bytes; want 206 and bytes 100-199", res.StatusCode, len(body))
		}
		req, _ := http.NewRequest(http.MethodHead, siteOf(t)+"/_upload/photos/2026/a.png", nil)
		res, body = do(t, req)
		if res.StatusCode != http.StatusOK || len(body) != 0 || res.ContentLength != int64(len(png)) ||
			res.Header.Get("Content-Type") != "image/png" || res.Header.Get("Content-Disposition") == "" {
			t.Errorf("HEAD: status %d, length %d, type %q, disposition %q", res.StatusCode, res.ContentLength,
				res.Header.Get("Content-Type"), res.Header.Get("Content-Disposition"))
		}
	})

	t.Run("not served", func(t *testing.T) {
		tmp := filepath.Join(root, reservedDir, "tmp-visible")
		if err := os.WriteFile(tmp, []byte("secret"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(tmp)
		for _, p := range []string{
			"/_upload/photos", "/_upload/photos/", "/_upload/", "/_upload", "/_upload/missing.txt",
			"/_upload/.uploads/", "/_upload/.UPLOADS/tmp-visible", "/_upload/.uploads/a/b",
		} {
			res, body := get(t, p)
			if res.StatusCode != http.StatusNotFound || bytes.Contains(body, []byte("secret")) || bytes.Contains(body, []byte("a.png")) {
				t.Errorf("GET %s: status %d, body %q; want 404 and nothing listed", p, res.StatusCode, body)
			}
		}
		// Under .uploads/{id} is the progress of upload {id}, never a file.
		for _, p := range []string{
			"/_upload/.uploads/tmp-visible", "/_upload/photos/../.uploads/tmp-visible", "/_upload/%2e%75ploads/tmp-visible",
		} {
			res, body := get(t, p)
			if res.StatusCode != http.StatusOK || decode[progressBody](t, body).State != stateStarting || bytes.Contains(body, []byte("secret")) {
				t.Errorf("GET %s: status %d, body %q; want the progress of an unknown upload", p, res.StatusCode, body)
			}
		}
	})

	t.Run("other requests go on", func(t *testing.T) {
		for _, p := range []string{"/", "/_uploads", "/_upload_x/a", "/index.html"} {
			res, body := get(t, p)
			if res.StatusCode != http.StatusOK || string(body) != "next handler" {
				t.Errorf("GET %s: %d %q; want the next handler", p, res.StatusCode, body)
			}
		}
		req, _ := http.NewRequest(http.MethodPut, siteOf(t)+"/_upload/big.bin", strings.NewReader("x"))
		if res, body := do(t, req); string(body) != "next handler" {
			t.Errorf("PUT: %d %q; want the next handler", res.StatusCode, body)
		}
	})
}

// pngBytes is a 1x1 PNG image.
func pngBytes() []byte {
	b, _ := hex.DecodeString("89504e470d0a1a0a0000000d4948445200000001000000010806000000" +
		"1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
	return b
}

// tempPrefix names the temp files in the private folder.
const tempPrefix = store.TempPrefix
