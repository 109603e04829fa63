package reflexupload

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// appRecorder is a small app behind reverse_proxy that records what it
// gets and answers as told.
type appRecorder struct {
	mu       sync.Mutex
	requests []appCall
	status   int // the status it answers with (default 200)
	srv      *httptest.Server
}

// appCall is one request the app got.
type appCall struct {
	method, path string
	header       http.Header
	body         []byte
	complete     bool // the body was read to its end without error
}

func newApp(t *testing.T) *appRecorder {
	t.Helper()
	a := &appRecorder{status: http.StatusOK}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		a.mu.Lock()
		a.requests = append(a.requests, appCall{r.Method, r.URL.Path, r.Header.Clone(), body, err == nil})
		status := a.status
		a.mu.Unlock()
		w.Header().Set("X-App", "yes")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		fmt.Fprintf(w, "app says %d", status)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *appRecorder) setStatus(s int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status = s
}

func (a *appRecorder) calls() []appCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]appCall(nil), a.requests...)
}

// waitCalls waits (bounded) until the app has n calls.
func (a *appRecorder) waitCalls(t *testing.T, n int) []appCall {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(a.calls()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	calls := a.calls()
	if len(calls) < n {
		t.Fatalf("the app got %d requests; want %d", len(calls), n)
	}
	return calls
}

func (a *appRecorder) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

func TestForward(t *testing.T) {
	app := newApp(t)
	root := startSite(t, fmt.Sprintf(`reflex_upload {
		root ROOT
		mode forward
	}
	reverse_proxy %s`, app.addr()))
	data := randomBytes(t, 100_000)
	hdr := http.Header{"Reflex-Client-Token": {"tok"}, "Reflex-Event-Handler": {"state.on_upload"}, "X-Custom": {"kept"}}
	res, body := postFiles(t, "/_upload?x=1", hdr,
		part{field: reflexArgsField, value: `{"a": 1}`},
		part{name: "docs/a.bin", data: data},
	)
	if res.StatusCode != http.StatusOK || string(body) != "app says 200" || res.Header.Get("X-App") != "yes" {
		t.Fatalf("the app's answer is not passed back unchanged: %d %q %v", res.StatusCode, body, res.Header)
	}
	calls := app.calls()
	if len(calls) != 1 {
		t.Fatalf("the app got %d requests", len(calls))
	}
	c := calls[0]
	if c.method != http.MethodPost || c.path != "/_upload" || c.header.Get("Content-Type") != "application/json" ||
		c.header.Get("Reflex-Client-Token") != "tok" || c.header.Get("X-Custom") != "kept" || c.header.Get("X-Upload-Id") == "" {
		t.Fatalf("the app got %s %s with %v", c.method, c.path, c.header)
	}
	meta := decode[uploadResult](t, c.body)
	if meta.UploadID != c.header.Get("X-Upload-Id") || len(meta.Files) != 1 || meta.Files[0].Path != "docs/a.bin" ||
		meta.Files[0].Size != int64(len(data)) || meta.Files[0].SHA256 != sha256Hex(data) || meta.Fields[reflexArgsField][0] != `{"a": 1}` {
		t.Fatalf("the app got metadata %s", c.body)
	}
	if bytes.Contains(c.body, data[:64]) {
		t.Fatal("the app got file bytes, not metadata")
	}
	if got, err := os.ReadFile(filepath.Join(root, "docs/a.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored file differs (err %v)", err)
	}

	t.Run("refused by the app", func(t *testing.T) {
		defer app.setStatus(http.StatusOK)
		for _, status := range []int{http.StatusBadRequest, http.StatusInternalServerError} {
			app.setStatus(status)
			res, body := postFiles(t, "/_upload?X-Progress-ID=refused", nil, part{name: "no.bin", data: data})
			if res.StatusCode != status || string(body) != fmt.Sprintf("app says %d", status) {
				t.Fatalf("the app's refusal is not passed back: %d %q", res.StatusCode, body)
			}
			assertStored(t, root, "docs/a.bin")
			if p := progressOf(t, "refused"); p.State != stateError || p.Status != status || p.Code != "app-refused" {
				t.Fatalf("progress after a refusal: %+v", p)
			}
		}
		app.setStatus(http.StatusOK)
	})

	t.Run("tus completion announced", func(t *testing.T) {
		before := len(app.calls())
		loc := tusCreate(t, len(data), "tus.bin", "Reflex-Client-Token", "tok")
		res, body := tusPatch(t, loc, 0, data, "Reflex-Client-Token", "tok")
		assertOffset(t, res, body, http.StatusNoContent, len(data))
		calls := app.waitCalls(t, before+1)
		c := calls[before]
		meta := decode[uploadResult](t, c.body)
		if c.method != http.MethodPost || c.path != "/_upload" || c.header.Get("Reflex-Client-Token") != "tok" ||
			c.header.Get("Tus-Resumable") != "" || len(meta.Files) != 1 || meta.Files[0].Path != "tus.bin" ||
			meta.Fields["filename"][0] != "tus.bin" || meta.UploadID != strings.TrimPrefix(loc, tusEndpoint+"/") {
			t.Fatalf("the app got %s %s %v %s", c.method, c.path, c.header, c.body)
		}
		app.setStatus(http.StatusConflict)
		defer app.setStatus(http.StatusOK)
		loc = tusCreate(t, len(data), "tus-refused.bin")
		res, body = tusPatch(t, loc, 0, data)
		if res.StatusCode != http.StatusConflict || string(body) != "app says 409" {
			t.Fatalf("the completing PATCH after a refusal: %d %q", res.StatusCode, body)
		}
		if _, err := os.Stat(filepath.Join(root, "tus-refused.bin")); !os.IsNotExist(err) {
			t.Fatalf("a refused tus upload stays stored: %v", err)
		}
		if res, _ := tusDo(t, http.MethodHead, loc, nil); res.StatusCode != http.StatusNotFound {
			t.Fatalf("a refused tus upload stays resumable: %d", res.StatusCode)
		}
	})
}

func TestTrack(t *testing.T) {
	app := newApp(t)
	root := startSite(t, fmt.Sprintf(`reflex_upload {
		root ROOT
		mode track
		max_size 200000
		max_files 3
		accept image/* .bin
	}
	reverse_proxy %s`, app.addr()))
	data := randomBytes(t, 150_000)
	body, ctype := multipartBody(t,
		part{field: reflexArgsField, value: `{"a": 1}`},
		part{name: "./a.bin", data: data},
		part{name: "/dir/b.png", ctype: "image/png", data: pngBytes()},
		part{name: "dir/sub/c.bin", data: data[:10]},
	)
	sent := bytes.Clone(body.Bytes())
	req, _ := http.NewRequest(http.MethodPost, siteOf(t)+"/_upload", body)
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Reflex-Client-Token", "tok")
	req.Header.Set("X-Progress-ID", "track-ok")
	res, resBody := do(t, req)
	if res.StatusCode != http.StatusOK || string(resBody) != "app says 200" {
		t.Fatalf("track: %d %q", res.StatusCode, resBody)
	}
	c := app.calls()[0]
	if !c.complete || !bytes.Equal(c.body, sent) || c.header.Get("Content-Type") != ctype || c.header.Get("Reflex-Client-Token") != "tok" {
		t.Fatalf("the app did not get the body byte-identical (complete %v, %d of %d bytes)", c.complete, len(c.body), len(sent))
	}
	assertStored(t, root) // track stores nothing
	p := progressOf(t, "track-ok", "Reflex-Client-Token", "tok")
	if p.State != stateDone || p.Received != int64(len(sent)) || len(p.Files) != 3 || p.Files[1].Path != "/dir/b.png" || p.Files[1].Name != "b.png" || p.Files[1].URL != "" {
		t.Fatalf("progress: %+v", p)
	}

	for _, tc := range []struct {
		name   string
		parts  []part
		status int
		code   string
	}{
		{"oversize", []part{{name: "a.bin", data: data}, {name: "big.bin", data: make([]byte, 200_001)}}, 413, "file-too-large"},
		{"too many files", []part{{name: "1.bin", data: data[:9]}, {name: "2.bin", data: data[:9]}, {name: "3.bin", data: data[:9]}, {name: "4.bin", data: data[:9]}}, 422, "too-many-files"},
		{"any content under .bin", []part{{name: "x.bin", data: []byte("<html></html>")}, {name: "y.bin"}, {name: "z", data: data[:5]}}, 415, "file-invalid-type"},
		{"wrong type", []part{{name: "page.html", ctype: "text/html", data: []byte("<html></html>")}}, 415, "file-invalid-type"},
		{"html as png", []part{{name: "cat.png", ctype: "image/png", data: []byte("<!DOCTYPE html><script>1</script>")}}, 415, "file-invalid-type"},
		{"dot-dot name", []part{{name: "../../etc/x.bin", data: data[:10]}}, 400, "invalid-filename"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(app.calls())
			res, body := postFiles(t, "/_upload", nil, tc.parts...)
			if res.StatusCode != tc.status || decode[errorBody](t, body).Code != tc.code {
				t.Fatalf("%d %s; want %d %s", res.StatusCode, body, tc.status, tc.code)
			}
			for _, c := range app.calls()[before:] {
				if c.complete {
					t.Fatalf("the app got a complete body (%d bytes) that breaks a limit", len(c.body))
				}
			}
		})
	}

	t.Run("cancel", func(t *testing.T) {
		up := startRawUpload(t, "/_upload", http.Header{"X-Progress-Id": {"track-cancel"}}, "slow.bin", 150_000, 50_000)
		waitProgress(t, "track-cancel", func(p progressBody) bool { return p.Received >= 50_000 })
		if res, body := deleteUpload(t, "track-cancel"); res.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE: %d %s", res.StatusCode, body)
		}
		res, body := up.response(t)
		assertError(t, res, body, http.StatusConflict, "upload-cancelled", "")
		if p := progressOf(t, "track-cancel"); p.State != stateCancelled {
			t.Fatalf("progress: %+v", p)
		}
		for _, c := range app.calls() {
			if c.complete && bytes.Contains(c.body, []byte("slow.bin")) {
				t.Fatal("the app got the cancelled body whole")
			}
		}
	})
}

func TestCORS(t *testing.T) {
	t.Parallel()
	startSite(t, `reflex_upload {
		root ROOT
		cors_origins http://localhost:3000 https://app.example.com
		cors_credentials
	}`)
	preflight := func(origin, path string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, siteOf(t)+path, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "PATCH")
		req.Header.Set("Access-Control-Request-Headers", "tus-resumable, upload-offset, x-reflex-extra")
		res, _ := do(t, req)
		return res
	}
	for _, origin := range []string{"http://localhost:3000", "https://app.example.com"} {
		for _, path := range []string{"/_upload", "/_upload/.uploads", "/_upload/.uploads/abc"} {
			res := preflight(origin, path)
			h := res.Header
			if res.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != origin ||
				h.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "PATCH") ||
				!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Upload-Offset") ||
				!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Reflex-Client-Token") ||
				!strings.Contains(h.Get("Access-Control-Allow-Headers"), "x-reflex-extra") || h.Get("Vary") != "Origin" {
				t.Errorf("preflight from %s to %s: %d %v", origin, path, res.StatusCode, h)
			}
		}
	}
	for _, origin := range []string{"http://evil.example", "http://localhost:3001", "null"} {
		res := preflight(origin, "/_upload")
		if res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from refused %s: %d %v", origin, res.StatusCode, res.Header)
		}
	}
	// Actual requests: an allowed origin can read the tus headers.
	res, _ := tusDo(t, http.MethodPost, tusEndpoint, nil, "Origin", "http://localhost:3000", "Upload-Length", "5",
		"Upload-Metadata", "filename "+b64("c.txt"))
	if res.StatusCode != http.StatusCreated || res.Header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" ||
		!strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "Location") ||
		!strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "Upload-Offset") {
		t.Fatalf("creation from an allowed origin: %d %v", res.StatusCode, res.Header)
	}
	res, _ = tusDo(t, http.MethodPost, tusEndpoint, nil, "Origin", "http://evil.example", "Upload-Length", "5",
		"Upload-Metadata", "filename "+b64("d.txt"))
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("a refused origin got CORS headers: %v", res.Header)
	}
	// tus discovery (OPTIONS without Access-Control-Request-Method) still works.
	res, _ = tusDo(t, http.MethodOptions, tusEndpoint, nil, "Origin", "http://localhost:3000")
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Tus-Version") != "1.0.0" {
		t.Fatalf("tus discovery with CORS on: %d %v", res.StatusCode, res.Header)
	}
}

// TestNoCORSByDefault: without cors_origins no CORS header is ever sent.
func TestNoCORSByDefault(t *testing.T) {
	t.Parallel()
	startSite(t, "reflex_upload {\nroot ROOT\n}")
	req, _ := http.NewRequest(http.MethodOptions, siteOf(t)+"/_upload/.uploads", nil)
	req.Header.Set("Origin", "http://localhost:3000")
	req.Header.Set("Access-Control-Request-Method", "POST")
	res, _ := do(t, req)
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS headers without cors_origins: %v", res.Header)
	}

}
