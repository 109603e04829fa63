// Package starlette_test runs reflex_upload in track mode in front of a real
// Python web app: app.py beside this file, a Starlette app that answers
// POST /_upload the way a Reflex backend does and writes into the module's
// root. It builds Caddy with the module (./cmd/caddy), starts uvicorn and
// Caddy as child processes on loopback ports, and checks what the client gets,
// what the app received (its log) and what is on disk. See README.md.
package starlette_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	mib = 1 << 20
	// testTimeout bounds each test: the processes, the clients and every wait.
	testTimeout = 3 * time.Minute
	// maxSize is the module's max_size in the Caddyfile.
	maxSize = 10 * mib
	// defaultPython is Debian's interpreter, which has python3-starlette,
	// python3-uvicorn and python3-multipart; E2E_PYTHON overrides it.
	defaultPython = "/usr/bin/python3"
	// testHeader tags each request so that the app's log can be searched.
	testHeader = "X-E2e-Request"
)

var (
	pythonOnce sync.Once
	pythonBin  string
	pythonErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	caddyrun.Cleanup()
	os.Exit(code)
}

// TestTrackReflexWireFormat sends exactly what Reflex's frontend sends for a
// folder upload: its headers, __reflex_event_args first, then one "files"
// part per file named file.path || file.name.
func TestTrackReflexWireFormat(t *testing.T) {
	h := setup(t)
	png := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), randomBytes(4000, 1)...)
	txt := []byte("hello from a folder upload\n")
	bin := randomBytes(300_000, 2)
	files := []filePart{
		{name: "./a.png", ctype: "image/png", data: png},
		{name: "/dir/b.txt", ctype: "text/plain", data: txt},
		{name: "dir/sub/c.bin", ctype: "application/octet-stream", data: bin},
	}
	body, ctype := multipartBody(t, `{"note":"x"}`, files)
	hdr := reflexHeaders("wire")

	start := time.Now()
	resp, respBody := h.post(t, hdr, ctype, body)
	t.Logf("POST %d bytes: %d %q in %v", len(body), resp.StatusCode, respBody, time.Since(start).Round(time.Millisecond))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200; headers %v; body %q", resp.StatusCode, resp.Header, respBody)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q, want application/x-ndjson (the app's answer)", ct)
	}
	if string(respBody) != "{}\n" {
		t.Errorf("body %q, want %q", respBody, "{}\n")
	}

	// The app got the request unchanged.
	req := h.app.request(t, "wire")
	for _, k := range []string{"reflex-client-token", "reflex-event-handler"} {
		if req.Headers[k] != hdr.Get(k) {
			t.Errorf("the app got %s %q, want %q", k, req.Headers[k], hdr.Get(k))
		}
	}
	b := h.app.waitBody(t, req.RID)
	h.assertBodyUnchanged(t, b, body)
	if f := h.app.event(req.RID, "form"); f == nil {
		t.Errorf("the app logged no form")
	} else {
		if f.Fields["__reflex_event_args"] != `{"note":"x"}` {
			t.Errorf("the app got __reflex_event_args %q, want %q", f.Fields["__reflex_event_args"], `{"note":"x"}`)
		}
		var names []string
		for _, x := range f.Files {
			names = append(names, x.Field+":"+x.Filename)
		}
		if want := []string{"files:./a.png", "files:/dir/b.txt", "files:dir/sub/c.bin"}; !slices.Equal(names, want) {
			t.Errorf("the app got file parts %q, want %q", names, want)
		}
	}

	stored := map[string][]byte{"a.png": png, "dir/b.txt": txt, "dir/sub/c.bin": bin}
	for rel, want := range stored {
		got, err := os.ReadFile(filepath.Join(h.shared, filepath.FromSlash(rel)))
		if err != nil {
			t.Errorf("not stored: %v", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes on disk (sha256 %s), want %d bytes (sha256 %s)", rel, len(got), sum(got), len(want), sum(want))
		}
	}
	if got := h.storedFiles(t); len(got) != len(stored) {
		t.Errorf("files under the shared folder: %q, want only %d", got, len(stored))
	}

	// Caddy serves them from the same folder.
	for rel, want := range stored {
		resp, got := h.get(t, "/_upload/"+rel, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /_upload/%s: status %d, want 200; body %q", rel, resp.StatusCode, caddyrun.Tail(string(got), 300))
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("GET /_upload/%s: %d bytes (sha256 %s), want %d (sha256 %s)", rel, len(got), sum(got), len(want), sum(want))
		}
		if v := resp.Header.Get("X-Content-Type-Options"); v != "nosniff" {
			t.Errorf("GET /_upload/%s: X-Content-Type-Options %q, want nosniff", rel, v)
		}
		if v := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(v, "attachment") {
			t.Errorf("GET /_upload/%s: Content-Disposition %q, want attachment", rel, v)
		}
	}
}

// TestTrackLargeFile sends one 8 MiB file (under max_size) without Reflex's
// headers: the app answers its JSON list.
func TestTrackLargeFile(t *testing.T) {
	h := setup(t)
	data := randomBytes(8*mib, 3)
	body, ctype := multipartBody(t, "", []filePart{{name: "large.bin", ctype: "application/octet-stream", data: data}})
	hdr := http.Header{}
	hdr.Set(testHeader, "large")

	start := time.Now()
	resp, respBody := h.post(t, hdr, ctype, body)
	elapsed := time.Since(start)
	t.Logf("POST %d bytes: %d %q in %v (%.1f MiB/s)", len(body), resp.StatusCode, caddyrun.Tail(string(respBody), 300),
		elapsed.Round(time.Millisecond), float64(len(body))/mib/elapsed.Seconds())
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200; headers %v; body %q", resp.StatusCode, resp.Header, caddyrun.Tail(string(respBody), 1000))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var list []struct {
		Name   string `json:"name"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(respBody, &list); err != nil {
		t.Fatalf("the answer is not the app's JSON list: %v: %q", err, respBody)
	}
	if len(list) != 1 || list[0].Name != "large.bin" || list[0].Size != int64(len(data)) || list[0].SHA256 != sum(data) {
		t.Errorf("answer %+v, want one file large.bin of %d bytes, sha256 %s", list, len(data), sum(data))
	}
	got, n, err := caddyrun.FileSHA256(filepath.Join(h.shared, "large.bin"))
	switch {
	case err != nil:
		t.Errorf("not stored: %v", err)
	case n != int64(len(data)) || got != sum(data):
		t.Errorf("large.bin: %d bytes, sha256 %s on disk; want %d, sha256 %s", n, got, len(data), sum(data))
	}
	req := h.app.request(t, "large")
	h.assertBodyUnchanged(t, h.app.waitBody(t, req.RID), body)
	if got := h.storedFiles(t); !slices.Equal(got, []string{"large.bin"}) {
		t.Errorf("files under the shared folder: %q, want only large.bin", got)
	}
}

// TestTrackOversize sends a 12 MiB file: the module stops the body at
// max_size, the client gets its 413, and the app, which saw a cut body,
// stores nothing.
func TestTrackOversize(t *testing.T) {
	h := setup(t)
	data := randomBytes(12*mib, 4)
	body, ctype := multipartBody(t, `{"note":"big"}`, []filePart{{name: "big.bin", ctype: "application/octet-stream", data: data}})
	hdr := reflexHeaders("oversize")

	start := time.Now()
	up := startRaw(t, h.ctx, h.caddyAddr, "/_upload", hdr, ctype, body, 256*1024, 0)
	up.wait(t, 30*time.Second)
	t.Logf("response after %v, %d of %d body bytes written (write error: %v)",
		time.Since(start).Round(time.Millisecond), up.written.Load(), len(body), up.writeErr())
	if up.readErr != nil {
		t.Fatalf("no response: %v (%d of %d body bytes written, write error: %v)", up.readErr, up.written.Load(), len(body), up.writeErr())
	}
	t.Logf("answer: %d %s %q", up.resp.StatusCode, up.resp.Header.Get("Content-Type"), up.body)
	if up.resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413; headers %v; body %q", up.resp.StatusCode, up.resp.Header, caddyrun.Tail(string(up.body), 1000))
	}
	e := decodeError(t, up.body)
	if e.Code != "file-too-large" {
		t.Errorf("code %q, want file-too-large (body %q)", e.Code, up.body)
	}
	if e.File != "" && e.File != "big.bin" {
		t.Errorf("file %q, want big.bin", e.File)
	}

	// The app got the start of the body, never its end.
	req := h.app.request(t, "oversize")
	b := h.app.waitBody(t, req.RID)
	if b.Complete == nil || *b.Complete {
		t.Errorf("the app received the whole body (%d bytes); want it cut at the limit", b.Bytes)
	} else {
		t.Logf("the app saw the body end after %d bytes: %s", b.Bytes, b.Error)
	}
	if b.Bytes > int64(len(body)) || b.Bytes >= int64(len(body)-mib) {
		t.Errorf("the app received %d of %d body bytes; want it cut near %d", b.Bytes, len(body), maxSize)
	}
	h.assertNothingStored(t, req.RID)
}

// TestTrackProgressAndCancel paces a 6 MiB upload (64 KiB every 50 ms),
// watches its progress, cancels it, and checks that everyone stops.
func TestTrackProgressAndCancel(t *testing.T) {
	h := setup(t)
	const id = "track-1"
	data := randomBytes(6*mib, 5)
	body, ctype := multipartBody(t, `{"note":"slow"}`, []filePart{{name: "slow.bin", ctype: "application/octet-stream", data: data}})
	hdr := reflexHeaders("cancel")
	hdr.Set("X-Progress-ID", id)
	token := hdr.Get("Reflex-Client-Token")
	owner := http.Header{"Reflex-Client-Token": {token}}

	start := time.Now()
	up := startRaw(t, h.ctx, h.caddyAddr, "/_upload", hdr, ctype, body, 64*1024, 50*time.Millisecond)

	// Progress: uploading, with received growing.
	var seen []int64
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("progress did not show a growing upload within 20 s: received values %v", seen)
		}
		select {
		case <-up.done:
			t.Fatalf("the upload ended before it was cancelled: %v %q (read error %v)", statusOf(up.resp), up.body, up.readErr)
		case <-time.After(150 * time.Millisecond):
		}
		p := h.progress(t, id, owner)
		switch p.State {
		case "starting":
			continue
		case "uploading":
		default:
			t.Fatalf("progress state %q while uploading: %+v", p.State, p)
		}
		if p.Size != 0 && p.Size != int64(len(body)) {
			t.Errorf("progress size %d, want the Content-Length %d", p.Size, len(body))
		}
		if p.Received > int64(len(body)) || p.Received > up.written.Load() {
			t.Errorf("progress received %d, but only %d of %d bytes were sent", p.Received, up.written.Load(), len(body))
		}
		if len(seen) == 0 || p.Received > seen[len(seen)-1] {
			seen = append(seen, p.Received)
		}
	}
	t.Logf("progress while uploading: received %v (after %v, %d bytes sent)", seen, time.Since(start).Round(time.Millisecond), up.written.Load())

	// Someone without the upload's token does not see it.
	if p := h.progress(t, id, nil); p.State != "starting" {
		t.Errorf("progress without the uploader's Reflex-Client-Token: state %q, want starting (owner scoping)", p.State)
	}

	// Cancel.
	resp, rb := h.do(t, http.MethodDelete, "/_upload/.uploads/"+id, owner, nil)
	cancelled := time.Now()
	t.Logf("DELETE /_upload/.uploads/%s: %d %q", id, resp.StatusCode, rb)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE: status %d, want 204; body %q", resp.StatusCode, rb)
	}
	up.wait(t, 10*time.Second)
	t.Logf("the uploader's request ended %v after the DELETE, %d of %d bytes written (write error: %v)",
		time.Since(cancelled).Round(time.Millisecond), up.written.Load(), len(body), up.writeErr())
	switch {
	case up.readErr != nil:
		t.Logf("the uploader's connection was closed without an answer: %v", up.readErr)
	case up.resp.StatusCode == http.StatusConflict:
		t.Logf("the uploader got: %d %q", up.resp.StatusCode, up.body)
		if e := decodeError(t, up.body); e.Code != "upload-cancelled" {
			t.Errorf("code %q, want upload-cancelled (body %q)", e.Code, up.body)
		}
	default:
		t.Errorf("the uploader got %s %v %q, want 409 upload-cancelled or a closed connection", up.resp.Status, up.resp.Header, up.body)
	}
	if up.written.Load() >= int64(len(body)) {
		t.Errorf("the whole body was sent: the cancel did not stop the upload")
	}

	var p progress
	for end := time.Now().Add(5 * time.Second); ; {
		p = h.progress(t, id, owner)
		if p.State == "cancelled" || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("progress after the cancel: %+v", p)
	if p.State != "cancelled" {
		t.Errorf("progress state %q after the cancel, want cancelled", p.State)
	}
	if p.Code != "" && p.Code != "upload-cancelled" {
		t.Errorf("progress code %q, want upload-cancelled", p.Code)
	}

	req := h.app.request(t, "cancel")
	if req.Headers["x-progress-id"] != id {
		t.Errorf("the app got X-Progress-ID %q, want %q", req.Headers["x-progress-id"], id)
	}
	b := h.app.waitBody(t, req.RID)
	if b.Complete == nil || *b.Complete {
		t.Errorf("the app received the whole body (%d bytes) of a cancelled upload", b.Bytes)
	} else {
		t.Logf("the app saw the body end after %d of %d bytes: %s", b.Bytes, len(body), b.Error)
	}
	h.assertNothingStored(t, req.RID)
}

// harness is one test's app, Caddy and shared folder.
type harness struct {
	ctx       context.Context
	shared    string // the app's UPLOAD_DIR and the module's root
	caddyAddr string
	base      string // http://caddyAddr
	app       *appProc
	caddy     *caddyrun.Server
	client    *http.Client
}

// setup checks for Python and its packages, builds Caddy, and starts the app
// and Caddy on fresh loopback ports.
func setup(t *testing.T) *harness {
	t.Helper()
	python := requirePython(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	caddyBin, err := caddyrun.Caddy()
	if err != nil {
		t.Fatalf("building Caddy: %v", err)
	}
	appDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}

	base := t.TempDir()
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &harness{ctx: ctx, shared: shared, client: &http.Client{Timeout: time.Minute}}
	t.Cleanup(h.client.CloseIdleConnections)

	// The app.
	appAddr := caddyrun.FreeAddr(t)
	_, appPort, _ := net.SplitHostPort(appAddr)
	app := supervisor.Config{
		Name: "uvicorn", Log: filepath.Join(base, "app.log"), Dir: appDir,
		Argv: []string{python, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", appPort},
		Env: append(pythonEnv(),
			"UPLOAD_DIR="+shared,
			"PYTHONDONTWRITEBYTECODE=1",
			"PYTHONUNBUFFERED=1",
			"PYTHONNOUSERSITE=1",
			"HOME="+filepath.Join(base, "apphome"),
			"TMPDIR="+base,
		),
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("files under %s:\n%s", shared, caddyrun.ListFiles(shared))
		}
	})
	started := time.Now()
	h.app = &appProc{caddyrun.Serve(t, ctx, app, caddyrun.Listening(appAddr))}
	t.Logf("the app listens on %s after %v", appAddr, time.Since(started).Round(time.Millisecond))

	// Caddy.
	h.caddyAddr = caddyrun.FreeAddr(t)
	h.base = "http://" + h.caddyAddr
	config, err := supervisor.Caddy(caddyBin, base, fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}
http://%s {
	reflex_upload {
		root %s
		mode track
		max_size 10MiB
	}
	reverse_proxy %s
}
`, h.caddyAddr, shared, appAddr))
	if err != nil {
		t.Fatal(err)
	}
	started = time.Now()
	h.caddy = caddyrun.Serve(t, ctx, config, caddyrun.Listening(h.caddyAddr))
	t.Logf("Caddy listens on %s after %v", h.caddyAddr, time.Since(started).Round(time.Millisecond))
	return h
}

// requirePython returns the interpreter that has Starlette, uvicorn and
// python-multipart; it skips the test when there is none, and fails it in CI.
func requirePython(t *testing.T) string {
	t.Helper()
	pythonOnce.Do(func() {
		pythonBin = os.Getenv("E2E_PYTHON")
		if pythonBin == "" {
			pythonBin = defaultPython
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, pythonBin, "-c", "import starlette, uvicorn, multipart; print(starlette.__version__, uvicorn.__version__)")
		cmd.Env = append(pythonEnv(), "PYTHONNOUSERSITE=1", "PYTHONDONTWRITEBYTECODE=1")
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		if err != nil {
			pythonErr = fmt.Errorf("%s cannot import starlette, uvicorn and multipart: %v\n%s", pythonBin, err, caddyrun.Tail(string(out), 2000))
			return
		}
		fmt.Fprintf(os.Stderr, "starlette: %s has starlette and uvicorn %s", pythonBin, out)
	})
	if pythonErr == nil {
		return pythonBin
	}
	const need = "the Starlette tests need Debian's python3 with python3-starlette, python3-uvicorn and python3-multipart " +
		"(apt-get install -y python3-starlette python3-uvicorn python3-multipart; E2E_PYTHON names another interpreter)"
	if os.Getenv("CI") != "" {
		t.Fatalf("%v\n%s", pythonErr, need)
	}
	t.Skipf("%s: %v", need, pythonErr)
	return ""
}

// pythonEnv is this process's environment without the variables that would
// point the interpreter at other packages.
func pythonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "UPLOAD_DIR":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// appProc is the uvicorn process; its log has one JSON object per line for
// each step of each request (see app.py).
type appProc struct {
	*caddyrun.Server
}

type appEvent struct {
	Event      string            `json:"event"`
	RID        int               `json:"rid"`
	Headers    map[string]string `json:"headers"`
	Complete   *bool             `json:"complete"`
	Bytes      int64             `json:"bytes"`
	BodySHA256 string            `json:"body_sha256"`
	Error      string            `json:"error"`
	Fields     map[string]string `json:"fields"`
	Files      []struct {
		Field    string `json:"field"`
		Filename string `json:"filename"`
	} `json:"files"`
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Status int    `json:"status"`
}

func (a *appProc) events() []appEvent {
	var out []appEvent
	for _, line := range strings.Split(a.Log(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e appEvent
		if json.Unmarshal([]byte(line), &e) == nil && e.Event != "" {
			out = append(out, e)
		}
	}
	return out
}

func (a *appProc) event(rid int, kind string) *appEvent {
	for _, e := range a.events() {
		if e.RID == rid && e.Event == kind {
			return &e
		}
	}
	return nil
}

// request waits (up to 10 s) for the app to log the request tagged tag.
func (a *appProc) request(t *testing.T, tag string) appEvent {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; {
		for _, e := range a.events() {
			if e.Event == "request" && e.Headers[strings.ToLower(testHeader)] == tag {
				return e
			}
		}
		if time.Now().After(end) {
			t.Fatalf("the app never received the request %q: the module did not pass it on", tag)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitBody waits (up to 15 s) for the app to log how request rid's body ended.
func (a *appProc) waitBody(t *testing.T, rid int) appEvent {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); ; {
		if e := a.event(rid, "body"); e != nil {
			return *e
		}
		if time.Now().After(end) {
			t.Fatalf("the app did not finish reading request %d's body within 15 s", rid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertBodyUnchanged checks that the app read exactly the body the client sent.
func (h *harness) assertBodyUnchanged(t *testing.T, b appEvent, body []byte) {
	t.Helper()
	if b.Complete == nil || !*b.Complete {
		t.Errorf("the app did not receive the whole body: %d of %d bytes: %s", b.Bytes, len(body), b.Error)
		return
	}
	if b.Bytes != int64(len(body)) || b.BodySHA256 != sum(body) {
		t.Errorf("the app received %d bytes (sha256 %s), the client sent %d (sha256 %s): the body was changed on the way",
			b.Bytes, b.BodySHA256, len(body), sum(body))
	}
}

// assertNothingStored checks, once the app has answered (or given up on)
// request rid and a moment later, that no file is anywhere under the shared
// folder: neither a stored file nor a temp file of the app or the module.
func (h *harness) assertNothingStored(t *testing.T, rid int) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); h.app.event(rid, "response") == nil; {
		if time.Now().After(end) {
			t.Errorf("the app did not end request %d within 10 s", rid)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e := h.app.event(rid, "stored"); e != nil {
		t.Errorf("the app stored %s (%d bytes) from a body that should have been cut", e.Path, e.Size)
	}
	var files []string
	for end := time.Now().Add(2 * time.Second); ; {
		files = h.storedFiles(t)
		if len(files) == 0 || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(files) != 0 {
		t.Errorf("files left under the shared folder: %q", files)
	}
}

// storedFiles lists every non-folder under the shared folder, including the
// module's private .uploads folder.
func (h *harness) storedFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(h.shared, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(h.shared, path)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Errorf("listing %s: %v", h.shared, err)
	}
	slices.Sort(out)
	return out
}

// do sends one request to Caddy and reads the whole answer.
func (h *harness) do(t *testing.T, method, path string, hdr http.Header, body []byte) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(h.ctx, method, h.base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return resp, b
}

func (h *harness) post(t *testing.T, hdr http.Header, contentType string, body []byte) (*http.Response, []byte) {
	t.Helper()
	hdr = hdr.Clone()
	hdr.Set("Content-Type", contentType)
	return h.do(t, http.MethodPost, "/_upload", hdr, body)
}

func (h *harness) get(t *testing.T, path string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	return h.do(t, http.MethodGet, path, hdr, nil)
}

// progress is the module's progress JSON.
type progress struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	State    string `json:"state"`
	Received int64  `json:"received"`
	Size     int64  `json:"size"`
	Status   int    `json:"status"`
	Code     string `json:"code"`
}

func (h *harness) progress(t *testing.T, id string, hdr http.Header) progress {
	t.Helper()
	resp, b := h.get(t, "/_upload/.uploads/"+id, hdr)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /_upload/.uploads/%s: status %d, want 200; body %q", id, resp.StatusCode, caddyrun.Tail(string(b), 1000))
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("GET /_upload/.uploads/%s: Cache-Control %q, want no-store", id, cc)
	}
	var p progress
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("GET /_upload/.uploads/%s: not JSON: %v: %q", id, err, b)
	}
	return p
}

type apiError struct {
	Detail string `json:"detail"`
	Code   string `json:"code"`
	File   string `json:"file"`
}

func decodeError(t *testing.T, b []byte) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(b, &e); err != nil {
		t.Errorf("the error answer is not JSON: %v: %q", err, caddyrun.Tail(string(b), 1000))
	}
	return e
}

// reflexHeaders are the headers Reflex's upload.js sends, plus the test tag.
func reflexHeaders(tag string) http.Header {
	h := http.Header{}
	h.Set("Reflex-Client-Token", "e2e-token-"+tag+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	h.Set("Reflex-Event-Handler", "state.upload_state.handle_upload")
	h.Set(testHeader, tag)
	return h
}

type filePart struct {
	name  string // as the browser sends it: file.path || file.name
	ctype string
	data  []byte
}

// multipartBody builds a body as a browser's FormData does for Reflex: the
// event arguments first (when given), then one "files" part per file.
func multipartBody(t *testing.T, eventArgs string, files []filePart) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if eventArgs != "" {
		if err := w.WriteField("__reflex_event_args", eventArgs); err != nil {
			t.Fatal(err)
		}
	}
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	for _, f := range files {
		hdr := textproto.MIMEHeader{}
		hdr.Set("Content-Disposition", fmt.Sprintf(`form-data; name="files"; filename="%s"`, esc.Replace(f.name)))
		hdr.Set("Content-Type", f.ctype)
		p, err := w.CreatePart(hdr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w.FormDataContentType()
}

// rawUpload is a POST written on its own TCP connection, in chunks with a
// pause between them, while its answer is read at the same time: a server
// that answers early and closes cannot make the client miss the answer.
type rawUpload struct {
	conn    net.Conn
	done    chan struct{} // closed when the answer was read or reading failed
	resp    *http.Response
	body    []byte
	readErr error

	written   atomic.Int64
	writeDone chan struct{}
	wmu       sync.Mutex
	werr      error
}

func startRaw(t *testing.T, ctx context.Context, addr, path string, hdr http.Header, contentType string, body []byte, chunk int, pause time.Duration) *rawUpload {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	u := &rawUpload{conn: conn, done: make(chan struct{}), writeDone: make(chan struct{})}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n",
		path, addr, contentType, len(body))
	if err := hdr.Write(&head); err != nil {
		t.Fatal(err)
	}
	head.WriteString("\r\n")
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, nil)

	go func() {
		defer close(u.done)
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			u.readErr = err
			return
		}
		u.resp = resp
		u.body, u.readErr = io.ReadAll(resp.Body)
		if u.readErr != nil {
			u.readErr = fmt.Errorf("reading the answer's body: %w", u.readErr)
		}
	}()
	go func() {
		defer close(u.writeDone)
		if _, err := conn.Write(head.Bytes()); err != nil {
			u.setWriteErr(err)
			return
		}
		for off := 0; off < len(body); off += chunk {
			if off > 0 && pause > 0 {
				select {
				case <-time.After(pause):
				case <-u.done:
				}
			}
			select {
			case <-u.done: // answered: stop sending, as a browser does
				return
			default:
			}
			// Counted before the write returns: the server can read the
			// bytes (and report them in its progress) before it does.
			piece := body[off:min(off+chunk, len(body))]
			u.written.Add(int64(len(piece)))
			n, err := conn.Write(piece)
			u.written.Add(int64(n - len(piece)))
			if err != nil {
				u.setWriteErr(err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-u.done
		<-u.writeDone
	})
	return u
}

func (u *rawUpload) setWriteErr(err error) {
	u.wmu.Lock()
	u.werr = err
	u.wmu.Unlock()
}

func (u *rawUpload) writeErr() error {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	return u.werr
}

// wait waits up to d for the answer (or the connection's end).
func (u *rawUpload) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-u.done:
	case <-time.After(d):
		t.Fatalf("no answer and no closed connection within %v (%d bytes written, write error: %v)", d, u.written.Load(), u.writeErr())
	}
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return "no answer"
	}
	return resp.Status
}

// randomBytes returns n pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(time.Now().UnixNano())
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
