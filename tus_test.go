package reflexupload

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const tusEndpoint = "/_upload/.uploads"

// tusDo sends one tus request; headers are name/value pairs, and
// Tus-Resumable: 1.0.0 is added unless given.
func tusDo(t *testing.T, method, target string, body []byte, headers ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, siteOf(t)+target, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	if method == http.MethodPatch {
		req.Header.Set("Content-Type", tusContentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	return do(t, req)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// tusCreate creates an upload and returns its URL path.
func tusCreate(t *testing.T, length int, name string, headers ...string) string {
	t.Helper()
	hs := append([]string{"Upload-Length", strconv.Itoa(length), "Upload-Metadata", "filename " + b64(name)}, headers...)
	res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, hs...)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("creation: %d %s", res.StatusCode, body)
	}
	loc := res.Header.Get("Location")
	if !strings.HasPrefix(loc, tusEndpoint+"/") || len(loc) != len(tusEndpoint)+33 {
		t.Fatalf("Location = %q", loc)
	}
	return loc
}

func tusPatch(t *testing.T, loc string, offset int, data []byte, headers ...string) (*http.Response, []byte) {
	t.Helper()
	return tusDo(t, http.MethodPatch, loc, data, append([]string{"Upload-Offset", strconv.Itoa(offset)}, headers...)...)
}

func assertOffset(t *testing.T, res *http.Response, body []byte, status, offset int) {
	t.Helper()
	if res.StatusCode != status || res.Header.Get("Upload-Offset") != strconv.Itoa(offset) {
		t.Fatalf("status %d, Upload-Offset %q, body %s; want %d and %d", res.StatusCode, res.Header.Get("Upload-Offset"), body, status, offset)
	}
	if res.Header.Get("Tus-Resumable") != "1.0.0" {
		t.Errorf("no Tus-Resumable on the answer")
	}
}

func TestTusOptions(t *testing.T) {
	t.Parallel()
	startSite(t, "reflex_upload {\nroot ROOT\nmax_size 1GiB\n}")
	res, _ := tusDo(t, http.MethodOptions, tusEndpoint, nil, "Tus-Resumable", "")
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("OPTIONS: %d", res.StatusCode)
	}
	for k, want := range map[string]string{
		"Tus-Resumable":          "1.0.0",
		"Tus-Version":            "1.0.0",
		"Tus-Max-Size":           strconv.Itoa(1 << 30),
		"Tus-Checksum-Algorithm": "sha1,sha256,md5",
		"Tus-Extension":          "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,concatenation",
	} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s = %q; want %q", k, got, want)
		}
	}
}

func TestTusCore(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	data := randomBytes(t, 10000)
	loc := tusCreate(t, len(data), "docs/report.bin")
	id := strings.TrimPrefix(loc, tusEndpoint+"/")

	res, body := tusDo(t, http.MethodHead, loc, nil)
	assertOffset(t, res, body, http.StatusOK, 0)
	if res.Header.Get("Upload-Length") != "10000" || res.Header.Get("Cache-Control") != "no-store" ||
		res.Header.Get("Upload-Metadata") != "filename "+b64("docs/report.bin") {
		t.Fatalf("HEAD headers: %v", res.Header)
	}
	exp, err := http.ParseTime(res.Header.Get("Upload-Expires"))
	if err != nil || exp.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("Upload-Expires %q: %v", res.Header.Get("Upload-Expires"), err)
	}

	res, body = tusPatch(t, loc, 0, data[:4000])
	assertOffset(t, res, body, http.StatusNoContent, 4000)
	if p := progressOf(t, id); p.State != stateUploading || p.Received != 4000 || *p.Size != 10000 || p.Kind != kindTus {
		t.Fatalf("progress: %+v", p)
	}
	res, body = tusPatch(t, loc, 3000, data[3000:])
	assertError(t, res, body, http.StatusConflict, "offset-mismatch", "")
	if res.Header.Get("Upload-Offset") != "4000" {
		t.Errorf("a 409 tells the offset: %q", res.Header.Get("Upload-Offset"))
	}
	assertStored(t, root, ".uploads/tus/"+id, ".uploads/tus/"+id+".json") // nothing served before it is complete
	if res, _ := get(t, "/_upload/docs/report.bin"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("an unfinished upload is served: %d", res.StatusCode)
	}

	res, body = tusPatch(t, loc, 4000, data[4000:])
	assertOffset(t, res, body, http.StatusNoContent, 10000)
	onDisk, err := os.ReadFile(filepath.Join(root, "docs/report.bin"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("stored file differs (err %v)", err)
	}
	p := progressOf(t, id)
	if p.State != stateDone || len(p.Files) != 1 || p.Files[0].SHA256 != sha256Hex(data) || p.Files[0].Path != "docs/report.bin" ||
		p.Files[0].URL != "/_upload/docs/report.bin" || p.Files[0].Size != 10000 {
		t.Fatalf("progress when done: %+v", p)
	}
	res, body = tusDo(t, http.MethodHead, loc, nil)
	assertOffset(t, res, body, http.StatusOK, 10000)
	assertStored(t, root, ".uploads/tus/"+id+".json", "docs/report.bin")

	// Stored the same way as a standard upload, permissions included.
	if res, body := postFiles(t, "/_upload", nil, part{name: "std.bin", data: data}); res.StatusCode != 201 {
		t.Fatalf("standard upload: %d %s", res.StatusCode, body)
	}
	tusInfo, err1 := os.Stat(filepath.Join(root, "docs/report.bin"))
	stdInfo, err2 := os.Stat(filepath.Join(root, "std.bin"))
	if err1 != nil || err2 != nil || tusInfo.Mode() != stdInfo.Mode() {
		t.Fatalf("modes: tus %v, standard %v (%v %v)", tusInfo.Mode(), stdInfo.Mode(), err1, err2)
	}
}

func TestTusErrors(t *testing.T) {
	t.Parallel()
	root := startSite(t, `reflex_upload {
	root ROOT
	max_size 1000
	min_size 10
	on_conflict reject
}`)
	if err := os.WriteFile(filepath.Join(root, "taken.bin"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	loc := tusCreate(t, 100, "a.bin")
	for _, tc := range []struct {
		name, method, target string
		body                 []byte
		headers              []string
		status               int
		code                 string
	}{
		{"create without Tus-Resumable", "POST", tusEndpoint, nil, []string{"Tus-Resumable", "", "Upload-Length", "5"}, 412, "unsupported-version"},
		{"create with another version", "POST", tusEndpoint, nil, []string{"Tus-Resumable", "0.2.2", "Upload-Length", "5"}, 412, "unsupported-version"},
		{"HEAD without Tus-Resumable", "HEAD", loc, nil, []string{"Tus-Resumable", ""}, 412, ""},
		{"PATCH without Tus-Resumable", "PATCH", loc, []byte("x"), []string{"Tus-Resumable", "", "Upload-Offset", "0"}, 412, "unsupported-version"},
		{"no length", "POST", tusEndpoint, nil, []string{"Upload-Metadata", "filename " + b64("b.bin")}, 400, "invalid-request"},
		{"bad length", "POST", tusEndpoint, nil, []string{"Upload-Length", "-5"}, 400, "invalid-request"},
		{"bad metadata", "POST", tusEndpoint, nil, []string{"Upload-Length", "50", "Upload-Metadata", "filename ***"}, 400, "invalid-request"},
		{"no name", "POST", tusEndpoint, nil, []string{"Upload-Length", "50"}, 400, "invalid-filename"},
		{"bad name", "POST", tusEndpoint, nil, []string{"Upload-Length", "50", "Upload-Metadata", "filename " + b64("../..")}, 400, "invalid-filename"},
		{"over max_size", "POST", tusEndpoint, nil, []string{"Upload-Length", "1001", "Upload-Metadata", "filename " + b64("b.bin")}, 413, "file-too-large"},
		{"under min_size", "POST", tusEndpoint, nil, []string{"Upload-Length", "9", "Upload-Metadata", "filename " + b64("b.bin")}, 422, "file-too-small"},
		{"name taken", "POST", tusEndpoint, nil, []string{"Upload-Length", "50", "Upload-Metadata", "filename " + b64("taken.bin")}, 409, "file-exists"},
		{"bad concat", "POST", tusEndpoint, nil, []string{"Upload-Length", "50", "Upload-Concat", "whole"}, 400, "invalid-request"},
		{"PATCH wrong type", "PATCH", loc, []byte("x"), []string{"Upload-Offset", "0", "Content-Type", "application/octet-stream"}, 415, "invalid-content-type"},
		{"PATCH no offset", "PATCH", loc, []byte("x"), nil, 400, "invalid-request"},
		{"length with a sign", "POST", tusEndpoint, nil, []string{"Upload-Length", "+50", "Upload-Metadata", "filename " + b64("b.bin")}, 400, "invalid-request"},
		{"length with spaces", "POST", tusEndpoint, nil, []string{"Upload-Length", "5 0", "Upload-Metadata", "filename " + b64("b.bin")}, 400, "invalid-request"},
		{"PATCH offset with a sign", "PATCH", loc, []byte("x"), []string{"Upload-Offset", "+0"}, 400, "invalid-request"},
		{"PATCH past length", "PATCH", loc, make([]byte, 101), []string{"Upload-Offset", "0"}, 413, "file-too-large"},
		{"PATCH bad checksum algorithm", "PATCH", loc, []byte("x"), []string{"Upload-Offset", "0", "Upload-Checksum", "crc32 AAAAAA=="}, 400, "invalid-request"},
		{"PATCH bad checksum digest", "PATCH", loc, []byte("x"), []string{"Upload-Offset", "0", "Upload-Checksum", "sha1 nope"}, 400, "invalid-request"},
		{"HEAD unknown", "HEAD", tusEndpoint + "/0123456789abcdef0123456789abcdef", nil, nil, 404, ""},
		{"PATCH unknown", "PATCH", tusEndpoint + "/0123456789abcdef0123456789abcdef", []byte("x"), []string{"Upload-Offset", "0"}, 404, "upload-not-found"},
		{"HEAD another owner", "HEAD", loc, nil, []string{"Reflex-Client-Token", "someone"}, 404, ""},
		{"PATCH another owner", "PATCH", loc, []byte("x"), []string{"Upload-Offset", "0", "Reflex-Client-Token", "someone"}, 404, "upload-not-found"},
		{"DELETE another owner", "DELETE", loc, nil, []string{"Reflex-Client-Token", "someone"}, 404, "upload-not-found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := tusDo(t, tc.method, tc.target, tc.body, tc.headers...)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, body %s; want %d", res.StatusCode, body, tc.status)
			}
			if tc.status == 412 && res.Header.Get("Tus-Version") != "1.0.0" {
				t.Errorf("a 412 must name the supported version")
			}
			if tc.code != "" {
				if e := decode[errorBody](t, body); e.Code != tc.code {
					t.Errorf("code %q; want %q", e.Code, tc.code)
				}
			}
		})
	}
	// None of that moved the upload, and nothing new was stored.
	res, body := tusDo(t, http.MethodHead, loc, nil)
	assertOffset(t, res, body, http.StatusOK, 0)
	id := strings.TrimPrefix(loc, tusEndpoint+"/")
	assertStored(t, root, ".uploads/tus/"+id, ".uploads/tus/"+id+".json", "taken.bin")
}

func TestTusCreationWithUploadAndDeferLength(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	data := randomBytes(t, 5000)

	res, body := tusDo(t, http.MethodPost, tusEndpoint, data[:2000], "Upload-Length", "5000",
		"Upload-Metadata", "filename "+b64("with.bin"), "Content-Type", tusContentType)
	assertOffset(t, res, body, http.StatusCreated, 2000)
	loc := res.Header.Get("Location")
	res, body = tusPatch(t, loc, 2000, data[2000:])
	assertOffset(t, res, body, http.StatusNoContent, 5000)

	// A whole small file in the creation request.
	res, body = tusDo(t, http.MethodPost, tusEndpoint, data, "Upload-Length", "5000",
		"Upload-Metadata", "filename "+b64("whole.bin"), "Content-Type", tusContentType)
	assertOffset(t, res, body, http.StatusCreated, 5000)

	// Length deferred, then given with the last PATCH.
	res, body = tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Defer-Length", "1", "Upload-Metadata", "filename "+b64("later.bin"))
	assertOffset(t, res, body, http.StatusCreated, 0)
	loc = res.Header.Get("Location")
	res, body = tusDo(t, http.MethodHead, loc, nil)
	if res.Header.Get("Upload-Defer-Length") != "1" || res.Header.Get("Upload-Length") != "" {
		t.Fatalf("HEAD of a deferred upload: %v", res.Header)
	}
	res, body = tusPatch(t, loc, 0, data[:3000])
	assertOffset(t, res, body, http.StatusNoContent, 3000)
	res, body = tusPatch(t, loc, 3000, data[3000:], "Upload-Length", "5000")
	assertOffset(t, res, body, http.StatusNoContent, 5000)

	// An empty file completes at creation.
	res, body = tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", "0", "Upload-Metadata", "filename "+b64("empty.bin"))
	assertOffset(t, res, body, http.StatusCreated, 0)

	for _, name := range []string{"with.bin", "whole.bin", "later.bin"} {
		if got, err := os.ReadFile(filepath.Join(root, name)); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s differs from what was sent (err %v)", name, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "empty.bin")); err != nil || fi.Size() != 0 {
		t.Errorf("empty.bin: %v %v", fi, err)
	}
}

// chunked hides a body's length, so that the client sends it chunked.
type chunked struct{ io.Reader }

// tusChunked sends a tus request whose body has no Content-Length.
func tusChunked(t *testing.T, method, target string, body []byte, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, siteOf(t)+target, chunked{bytes.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", tusContentType)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(t, req)
}

// TestTusChunkPastLength sends bodies longer than what the upload has left:
// each is refused with 413 and changes nothing, whether its length is
// declared or not; a creation refused so leaves no upload and no Location.
func TestTusChunkPastLength(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	data := randomBytes(t, 100)
	loc := tusCreate(t, len(data), "p.bin")
	id := strings.TrimPrefix(loc, tusEndpoint+"/")
	res, body := tusPatch(t, loc, 0, data[:40])
	assertOffset(t, res, body, http.StatusNoContent, 40)

	res, body = tusChunked(t, http.MethodPatch, loc, append(slices.Clone(data[40:]), "excess"...), "Upload-Offset", "40")
	assertError(t, res, body, http.StatusRequestEntityTooLarge, "file-too-large", "p.bin")
	assertJSON(t, "chunked PATCH past the length", body, `{"code": "file-too-large",
		"detail": "the chunk goes past Upload-Length; it was discarded", "file": "p.bin"}`, nil)
	res, body = tusDo(t, http.MethodHead, loc, nil)
	assertOffset(t, res, body, http.StatusOK, 40)
	assertStored(t, root, ".uploads/tus/"+id, ".uploads/tus/"+id+".json")
	res, body = tusChunked(t, http.MethodPatch, loc, data[40:], "Upload-Offset", "40")
	assertOffset(t, res, body, http.StatusNoContent, 100)
	if got, err := os.ReadFile(filepath.Join(root, "p.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("p.bin differs from what was sent (err %v)", err)
	}

	for _, tc := range []struct {
		send   func(*testing.T, string, string, []byte, ...string) (*http.Response, []byte)
		detail string
	}{
		{tusDo, "the body is longer than Upload-Length"},
		{tusChunked, "the chunk goes past Upload-Length; it was discarded"},
	} {
		res, body = tc.send(t, http.MethodPost, tusEndpoint, data, "Upload-Length", "10",
			"Upload-Metadata", "filename "+b64("c.bin"), "Content-Type", tusContentType)
		assertError(t, res, body, http.StatusRequestEntityTooLarge, "file-too-large", "c.bin")
		assertJSON(t, "creation past the length", body, `{"code": "file-too-large", "detail": "`+tc.detail+`", "file": "c.bin"}`, nil)
		if l := res.Header.Get("Location"); l != "" {
			t.Errorf("a refused creation answers Location %q", l)
		}
	}
	assertStored(t, root, ".uploads/tus/"+id+".json", "p.bin")
}

// TestTusMetadataSize: the state keeps Upload-Metadata once, as sent, and
// a header over the bound is refused.
func TestTusMetadataSize(t *testing.T) {
	// Caddy reads 16 KiB of request headers by default: allow more, so that
	// the module's own bound is what answers.
	root := t.TempDir()
	newTester(t).InitServer(caddyGlobals(`	servers {
		max_header_size 4MiB
	}`)+fmt.Sprintf(`	reflex_upload {
		root %s
	}
}
`, root), "caddyfile")
	client.CloseIdleConnections()
	bin := string(randomBytes(t, 40<<10)) // binary values escape badly in JSON
	md := "filename " + b64("m.bin") + ",blob " + b64(bin) + ",more " + b64(bin[:5000])
	loc := tusCreate(t, 10, "m.bin", "Upload-Metadata", md)
	id := strings.TrimPrefix(loc, tusEndpoint+"/")
	fi, err := os.Stat(filepath.Join(root, ".uploads/tus", id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > int64(len(md))+2048 {
		t.Errorf("the state of an upload with %d bytes of metadata has %d bytes", len(md), fi.Size())
	}
	res, body := tusDo(t, http.MethodHead, loc, nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Upload-Metadata") != md {
		t.Fatalf("HEAD: %d %s; the metadata differs from what was sent", res.StatusCode, body)
	}
	res, body = tusPatch(t, loc, 0, []byte("0123456789"))
	assertOffset(t, res, body, http.StatusNoContent, 10)

	big := "filename " + b64("big.bin") + ",blob " + b64(strings.Repeat("x", 1<<20))
	res, body = tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", "10", "Upload-Metadata", big)
	assertError(t, res, body, http.StatusRequestHeaderFieldsTooLarge, "metadata-too-large", "")
	assertJSON(t, "metadata over the bound", body, `{"code": "metadata-too-large", "detail": "Upload-Metadata is larger than 64 KiB"}`, nil)
	assertStored(t, root, ".uploads/tus/"+id+".json", "m.bin")
}

func TestTusChecksum(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	data := randomBytes(t, 3000)
	sum := func(h interface{ Sum([]byte) []byte }, p []byte) string {
		w := h.(io.Writer)
		w.Write(p)
		return base64.StdEncoding.EncodeToString(h.Sum(nil))
	}
	loc := tusCreate(t, len(data), "ck.bin")
	res, body := tusPatch(t, loc, 0, data[:1000], "Upload-Checksum", "sha1 "+sum(sha1.New(), data[:1000]))
	assertOffset(t, res, body, http.StatusNoContent, 1000)
	// A wrong digest: 460, the chunk discarded.
	res, body = tusPatch(t, loc, 1000, data[1000:2000], "Upload-Checksum", "sha256 "+sum(sha256.New(), data[:1000]))
	if res.StatusCode != 460 {
		t.Fatalf("mismatch: %d %s", res.StatusCode, body)
	}
	res, body = tusDo(t, http.MethodHead, loc, nil)
	assertOffset(t, res, body, http.StatusOK, 1000)
	res, body = tusPatch(t, loc, 1000, data[1000:2000], "Upload-Checksum", "sha256 "+sum(sha256.New(), data[1000:2000]))
	assertOffset(t, res, body, http.StatusNoContent, 2000)
	res, body = tusPatch(t, loc, 2000, data[2000:], "Upload-Checksum", "md5 "+sum(md5.New(), data[2000:]))
	assertOffset(t, res, body, http.StatusNoContent, 3000)
	if got, err := os.ReadFile(filepath.Join(root, "ck.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored file differs (err %v)", err)
	}
}

func TestTusTermination(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	loc := tusCreate(t, 100, "t.bin")
	id := strings.TrimPrefix(loc, tusEndpoint+"/")
	tusPatch(t, loc, 0, make([]byte, 50))
	res, body := tusDo(t, http.MethodDelete, loc, nil)
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Tus-Resumable") != "1.0.0" {
		t.Fatalf("DELETE: %d %s", res.StatusCode, body)
	}
	assertStored(t, root)
	if res, _ := tusDo(t, http.MethodHead, loc, nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD after termination: %d", res.StatusCode)
	}
	if p := progressOf(t, id); p.State != stateCancelled {
		t.Fatalf("progress after termination: %+v", p)
	}
	// Terminated is gone, as HEAD says: 404, with or without Tus-Resumable
	// (tus-js-client's terminate retries a 409, then fails).
	res, body = tusDo(t, http.MethodDelete, loc, nil)
	assertError(t, res, body, http.StatusNotFound, "upload-not-found", "")
	assertJSON(t, "DELETE of a terminated upload", body, `{"code": "upload-not-found", "detail": "no resumable upload has this id"}`, nil)
	res, body = tusDo(t, http.MethodDelete, loc, nil, "Tus-Resumable", "")
	assertError(t, res, body, http.StatusNotFound, "upload-not-found", "")
	assertJSON(t, "cancel of a terminated upload", body, `{"code": "upload-not-found", "detail": "no upload in flight has this id"}`, nil)

	// DELETE is also the cancel of any upload by its id, which clients that
	// do not speak tus send without Tus-Resumable: it terminates a tus
	// upload too. Another version of the protocol is refused.
	loc = tusCreate(t, 100, "u.bin")
	res, body = tusDo(t, http.MethodDelete, loc, nil, "Tus-Resumable", "0.2.2")
	assertError(t, res, body, http.StatusPreconditionFailed, "unsupported-version", "")
	res, body = tusDo(t, http.MethodDelete, loc, nil, "Tus-Resumable", "")
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE without Tus-Resumable: %d %s", res.StatusCode, body)
	}
	assertStored(t, root)

	// A completed upload is not terminated: its file is stored already.
	loc = tusCreate(t, 3, "c.bin")
	tusPatch(t, loc, 0, []byte("abc"))
	res, body = tusDo(t, http.MethodDelete, loc, nil)
	assertError(t, res, body, http.StatusConflict, "upload-finished", "")
}

// TestTusMethodOverride sends PATCH and DELETE as POST with
// X-HTTP-Method-Override, as clients behind strict proxies do.
func TestTusMethodOverride(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	loc := tusCreate(t, 10, "o.bin")
	res, body := tusDo(t, http.MethodPost, loc, []byte("0123456789"), "X-HTTP-Method-Override", "PATCH",
		"Upload-Offset", "0", "Content-Type", tusContentType)
	assertOffset(t, res, body, http.StatusNoContent, 10)
	overridden := strings.TrimPrefix(loc, tusEndpoint+"/")
	loc = tusCreate(t, 10, "d.bin")
	if res, body := tusDo(t, http.MethodPost, loc, nil, "X-HTTP-Method-Override", "DELETE"); res.StatusCode != http.StatusNoContent {
		t.Fatalf("overridden DELETE: %d %s", res.StatusCode, body)
	}
	assertStored(t, root, ".uploads/tus/"+overridden+".json", "o.bin")
}

func TestTusConcatenation(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\nmax_size 20000\n}")
	data := randomBytes(t, 12000)
	var parts []string
	for i := range 3 {
		res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", "4000", "Upload-Concat", "partial")
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("partial: %d %s", res.StatusCode, body)
		}
		loc := res.Header.Get("Location")
		res, body = tusDo(t, http.MethodHead, loc, nil)
		if res.Header.Get("Upload-Concat") != "partial" {
			t.Fatalf("HEAD of a partial: %v", res.Header)
		}
		res, body = tusPatch(t, loc, 0, data[i*4000:(i+1)*4000])
		assertOffset(t, res, body, http.StatusNoContent, 4000)
		if p := progressOf(t, strings.TrimPrefix(loc, tusEndpoint+"/")); p.State != stateDone || len(p.Files) != 0 {
			t.Fatalf("progress of a complete partial upload: %+v", p)
		}
		parts = append(parts, loc)
	}
	// Parts out of order are put together in the order listed.
	concat := "final;" + strings.Join([]string{parts[0], siteOf(t) + parts[1], parts[2]}, " ")
	res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Concat", concat, "Upload-Metadata", "filename "+b64("joined.bin"))
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("final: %d %s", res.StatusCode, body)
	}
	final := res.Header.Get("Location")
	if got, err := os.ReadFile(filepath.Join(root, "joined.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("joined.bin differs (err %v)", err)
	}
	res, body = tusDo(t, http.MethodHead, final, nil)
	assertOffset(t, res, body, http.StatusOK, 12000)
	if !strings.HasPrefix(res.Header.Get("Upload-Concat"), "final;") {
		t.Errorf("HEAD of the final upload: %v", res.Header)
	}
	res, body = tusPatch(t, final, 12000, []byte("x"))
	assertError(t, res, body, http.StatusForbidden, "final-upload", "")
	id := strings.TrimPrefix(final, tusEndpoint+"/")
	if p := progressOf(t, id); p.State != stateDone || p.Files[0].SHA256 != sha256Hex(data) {
		t.Fatalf("progress of the final upload: %+v", p)
	}
	assertStored(t, root, ".uploads/tus/"+id+".json", "joined.bin") // the partial uploads are gone

	t.Run("refused", func(t *testing.T) {
		unfinished := func() string {
			res, _ := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", "15000", "Upload-Concat", "partial")
			return res.Header.Get("Location")
		}()
		for _, tc := range []struct {
			name, concat string
			status       int
		}{
			{"no urls", "final;", 400},
			{"unknown part", "final;" + tusEndpoint + "/0123456789abcdef0123456789abcdef", 400},
			{"unfinished part", "final;" + unfinished, 400},
			{"not a partial", "final;" + final, 400},
		} {
			res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Concat", tc.concat, "Upload-Metadata", "filename "+b64("x.bin"))
			if res.StatusCode != tc.status {
				t.Errorf("%s: %d %s; want %d", tc.name, res.StatusCode, body, tc.status)
			}
		}
		var big []string
		for range 2 {
			res, _ := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", "15000", "Upload-Concat", "partial")
			loc := res.Header.Get("Location")
			tusPatch(t, loc, 0, make([]byte, 15000))
			big = append(big, loc)
		}
		res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Concat", "final;"+strings.Join(big, " "), "Upload-Metadata", "filename "+b64("x.bin"))
		assertError(t, res, body, 413, "file-too-large", "x.bin")
	})
}

func TestTusTypeCheck(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\naccept image/*\n}")
	html := append([]byte("<!DOCTYPE html><html><script>alert(1)</script>"), bytes.Repeat([]byte(" "), 5000)...)
	// Refused at creation on the name and declared type alone.
	res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", "100", "Upload-Metadata", "filename "+b64("page.html"))
	assertError(t, res, body, 415, "file-invalid-type", "page.html")
	res, body = tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", "100",
		"Upload-Metadata", "filename "+b64("cat.png")+",filetype "+b64("text/html"))
	assertError(t, res, body, 415, "file-invalid-type", "cat.png")
	// Refused on the content as soon as its first bytes arrive, not at the end.
	loc := tusCreate(t, len(html)+100000, "cat.png")
	res, body = tusPatch(t, loc, 0, html)
	assertError(t, res, body, 415, "file-invalid-type", "cat.png")
	if res, _ := tusDo(t, http.MethodHead, loc, nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("a refused upload stays: HEAD %d", res.StatusCode)
	}
	// A real PNG, in chunks smaller than the sniffing window.
	png := append(pngBytes(), make([]byte, 4000)...)
	loc = tusCreate(t, len(png), "ok.png")
	for off := 0; off < len(png); off += 1000 {
		res, body := tusPatch(t, loc, off, png[off:min(off+1000, len(png))])
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("PATCH at %d: %d %s", off, res.StatusCode, body)
		}
	}
	assertStored(t, root, ".uploads/tus/"+strings.TrimPrefix(loc, tusEndpoint+"/")+".json", "ok.png")
}

func TestTusMinSizeAtCompletion(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\nmin_size 100\n}")
	res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Defer-Length", "1", "Upload-Metadata", "filename "+b64("s.bin"))
	loc := res.Header.Get("Location")
	res, body = tusPatch(t, loc, 0, make([]byte, 50), "Upload-Length", "50")
	assertError(t, res, body, 422, "file-too-small", "s.bin")
	assertStored(t, root)
}

func TestTusExpiry(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\nchunk_expiry 1h\n}")
	clock := &fakeClock{now: time.Now()}
	reg := registryOf(t, root)
	reg.setClock(clock.Now)
	defer reg.setClock(time.Now)

	stale := tusCreate(t, 100, "stale.bin")
	tusPatch(t, stale, 0, make([]byte, 10))
	clock.Advance(50 * time.Minute)
	live := tusCreate(t, 100, "live.bin")
	res, body := tusPatch(t, stale, 10, make([]byte, 10)) // a write moves the expiry on
	assertOffset(t, res, body, http.StatusNoContent, 20)
	exp, _ := http.ParseTime(res.Header.Get("Upload-Expires"))
	if want := clock.Now().Add(time.Hour); exp.Before(want.Add(-time.Second)) {
		t.Fatalf("Upload-Expires %v; want about %v", exp, want)
	}
	clock.Advance(61 * time.Minute)
	// Both are past expiry now: refused with 410 before the sweeper runs.
	res, body = tusDo(t, http.MethodHead, live, nil)
	if res.StatusCode != http.StatusGone {
		t.Fatalf("HEAD of an expired upload: %d %s", res.StatusCode, body)
	}
	res, body = tusPatch(t, stale, 20, make([]byte, 10))
	assertError(t, res, body, http.StatusGone, "upload-expired", "")

	h := handlerOf(t, root)
	if n := h.root.sweepTus(clock.Now()); n != 2 {
		t.Fatalf("the sweeper removed %d uploads; want 2", n)
	}
	assertStored(t, root)
	if p := progressOf(t, strings.TrimPrefix(stale, tusEndpoint+"/")); p.State != stateError || p.Code != "upload-expired" {
		t.Fatalf("progress of an expired upload: %+v", p)
	}
}

// handlerOf builds a handler on an open upload root, for calling its
// background work directly.
func handlerOf(t *testing.T, root string) *Handler {
	t.Helper()
	var h *Handler
	roots.Range(func(key, value any) bool {
		if key == root {
			h = &Handler{root: value.(*uploadRoot), ChunkExpiry: 1}
			return false
		}
		return true
	})
	if h == nil {
		t.Fatalf("no upload root %s is open", root)
	}
	return h
}

// TestTusOneWriter stalls a PATCH mid-body and sends a new request for the
// same upload: the stalled one is stopped at once and keeps what it got.
func TestTusOneWriter(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	data := randomBytes(t, 300_000)
	loc := tusCreate(t, len(data), "w.bin")
	id := strings.TrimPrefix(loc, tusEndpoint+"/")

	up := startRawPatch(t, loc, 0, len(data), data[:120_000])
	waitProgress(t, id, func(p progressBody) bool { return p.Received >= 120_000 })
	// HEAD stops the stalled PATCH, which saves what it received.
	res, body := tusDo(t, http.MethodHead, loc, nil)
	assertOffset(t, res, body, http.StatusOK, 120_000)
	res, body = up.response(t)
	assertError(t, res, body, http.StatusServiceUnavailable, "upload-interrupted", "")
	assertJSON(t, "interrupted PATCH", body, `{"code": "upload-interrupted",
		"detail": "a newer request for this upload took over; what was received is kept"}`, nil)
	if res.Header.Get("Tus-Resumable") != "1.0.0" {
		t.Errorf("no Tus-Resumable on the interrupted PATCH's answer")
	}

	up = startRawPatch(t, loc, 120_000, len(data)-120_000, data[120_000:200_000])
	waitProgress(t, id, func(p progressBody) bool { return p.Received >= 200_000 })
	// A PATCH from where the stalled one got to takes over too: the
	// stalled one stops at once and saves its bytes, so the offsets meet.
	res, body = tusPatch(t, loc, 200_000, data[200_000:])
	assertOffset(t, res, body, http.StatusNoContent, len(data))
	if res, body := up.response(t); res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("stalled PATCH: %d %s", res.StatusCode, body)
	}
	if got, err := os.ReadFile(filepath.Join(root, "w.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("w.bin differs (err %v)", err)
	}
}

// startRawPatch sends a PATCH head declaring length body bytes and the
// first of them, then leaves the request open.
func startRawPatch(t *testing.T, loc string, offset, length int, first []byte) *rawUpload {
	t.Helper()
	up := dialRaw(t, fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n"+
		"Content-Type: %s\r\nUpload-Offset: %d\r\nContent-Length: %d\r\n\r\n", loc, tusContentType, offset, length))
	if _, err := up.conn.Write(first); err != nil {
		t.Fatal(err)
	}
	return up
}

// TestTusIdleTimeoutRetryable stalls a PATCH past idle_timeout: the server
// cuts it with a status that stock clients retry (tus-js-client gives up on
// a 4xx other than 409 and 423), and keeps every byte it received.
func TestTusIdleTimeoutRetryable(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\nidle_timeout 1s\n}")
	data := randomBytes(t, 50_000)
	loc := tusCreate(t, len(data), "idle.bin")
	id := strings.TrimPrefix(loc, tusEndpoint+"/")
	up := startRawPatch(t, loc, 0, len(data), data[:10_000])
	res, body := up.response(t) // the client sends nothing more
	assertError(t, res, body, http.StatusServiceUnavailable, "upload-interrupted", "")
	assertJSON(t, "stalled PATCH", body, `{"code": "upload-interrupted",
		"detail": "reading the chunk failed (the client stopped sending or went away); what was received is kept"}`, nil)
	res, body = tusDo(t, http.MethodHead, loc, nil)
	assertOffset(t, res, body, http.StatusOK, 10_000)
	if got, err := os.ReadFile(filepath.Join(root, ".uploads/tus", id)); err != nil || !bytes.Equal(got, data[:10_000]) {
		t.Fatalf("the bytes received are not kept (err %v)", err)
	}
	res, body = tusPatch(t, loc, 10_000, data[10_000:])
	assertOffset(t, res, body, http.StatusNoContent, len(data))
	if got, err := os.ReadFile(filepath.Join(root, "idle.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("idle.bin differs (err %v)", err)
	}
}
