// Package tusjs_test runs reflex_upload's tus endpoint against the real
// tus-js-client: it builds Caddy with the module (./cmd/caddy), starts it as a
// child process on a loopback port, and drives uploads with upload.mjs (Node)
// beside this file. See README.md.
package tusjs_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/noderun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

const (
	mib = 1 << 20
	// testTimeout bounds each test: Caddy, the client and every wait.
	testTimeout = 3 * time.Minute
)

var (
	npmOnce sync.Once
	npmErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	caddyrun.Cleanup()
	os.Exit(code)
}

// TestTusJSChunked uploads 50 MiB in 8 MiB PATCH requests.
func TestTusJSChunked(t *testing.T) {
	h := setup(t)
	src, sum := randomFile(t, 50*mib, 1)
	res, run := h.upload(t, nil, "--file", src, "--filename", "chunked.bin", "--chunk-size", strconv.Itoa(8*mib))
	h.assertComplete(t, res, run, "chunked.bin", 50*mib, sum)
	if n := run.count("http POST "); n != 1 {
		t.Errorf("the client created %d uploads, want 1", n)
	}
	if n := run.count("http PATCH "); n < 7 {
		t.Errorf("the client sent %d PATCH requests, want at least 7 (50 MiB in 8 MiB chunks)", n)
	}
}

// TestTusJSParallel uploads 50 MiB as 4 partial uploads that a final
// upload concatenates (the tus concatenation extension).
func TestTusJSParallel(t *testing.T) {
	h := setup(t)
	src, sum := randomFile(t, 50*mib, 2)
	res, run := h.upload(t, nil, "--file", src, "--filename", "parallel.bin",
		"--chunk-size", strconv.Itoa(8*mib), "--parallel", "4")
	h.assertComplete(t, res, run, "parallel.bin", 50*mib, sum)
	// 4 partial uploads, then the final one.
	if n := run.count("http POST "); n != 5 {
		t.Errorf("the client sent %d POST requests, want 5 (4 partial uploads and the final one)", n)
	}
}

// TestTusJSCutConnection cuts the client's connection in the middle of its
// second 16 MiB chunk: the client asks the server for its offset (HEAD) and
// sends the rest of the chunk on a new connection.
func TestTusJSCutConnection(t *testing.T) {
	h := setup(t)
	src, sum := randomFile(t, 30*mib, 3)
	res, run := h.upload(t, nil, "--file", src, "--filename", "cut.bin",
		"--chunk-size", strconv.Itoa(16*mib), "--proxy-cut-after", strconv.Itoa(20*mib))
	h.assertComplete(t, res, run, "cut.bin", 30*mib, sum)
	if res.Cuts < 1 {
		t.Errorf("the proxy cut %d connections, want at least 1", res.Cuts)
	}
	if res.Retries < 1 {
		t.Errorf("the client retried %d times, want at least 1", res.Retries)
	}
	h.assertResumed(t, run, res)
}

// TestTusJSRestart stops Caddy (SIGTERM) while an upload is in flight and
// starts it again on the same port and root: the client resumes the same
// upload once the server is back.
func TestTusJSRestart(t *testing.T) {
	h := setup(t)
	src, sum := randomFile(t, 40*mib, 4)
	const chunk = 4 * mib
	accepted := make(chan struct{})
	var once sync.Once
	watch := func(line string) {
		// The server has stored at least one chunk.
		if v, ok := strings.CutPrefix(line, "chunk accepted="); ok {
			if n, _, _ := strings.Cut(v, " "); n != "0" {
				once.Do(func() { close(accepted) })
			}
		}
	}
	// tus-js-client cannot throttle, so the script's proxy does (8 MiB/s,
	// about 5 s for the whole file), which leaves time to restart Caddy
	// while the upload is in flight.
	run := h.startUpload(t, watch, "--file", src, "--filename", "restart.bin",
		"--chunk-size", strconv.Itoa(chunk), "--proxy-rate", strconv.Itoa(8*mib),
		"--retry-delays", "0,250,500,1000,1000,1000,2000,2000,2000,2000,2000,2000")
	select {
	case <-accepted:
	case <-run.Done():
		res := run.result(t)
		t.Fatalf("the upload ended before the server had accepted a chunk: %+v", res)
	case <-h.ctx.Done():
		t.Fatalf("no chunk accepted in time: %v", h.ctx.Err())
	}
	stopping := time.Now()
	h.caddy.Stop(t)
	t.Logf("Caddy stopped (SIGTERM) after the first accepted chunk, in %v", time.Since(stopping).Round(time.Millisecond))
	select {
	case <-run.Done():
		t.Errorf("the upload ended while Caddy was down")
	case <-time.After(500 * time.Millisecond):
	}
	starting := time.Now()
	h.caddy.Start(t)
	t.Logf("Caddy listens again on %s after %v", h.addr, time.Since(starting).Round(time.Millisecond))
	<-run.Done()
	res := run.result(t)
	h.assertComplete(t, res, run, "restart.bin", 40*mib, sum)
	if res.Retries < 1 {
		t.Errorf("the client retried %d times, want at least 1 (the restart went unnoticed?)", res.Retries)
	}
	h.assertResumed(t, run, res)
}

// TestTusJSStalledUplink stalls the client's outgoing bytes in the middle of
// a one-PATCH upload while its connection stays open, past the server's
// idle_timeout: the server cuts the PATCH with a status the client retries,
// keeps what it received, and the client resumes on its own.
func TestTusJSStalledUplink(t *testing.T) {
	h := setup(t, siteConfig{upload: []string{"idle_timeout 1s"}})
	src, sum := randomFile(t, 12*mib, 6)
	res, run := h.upload(t, nil, "--file", src, "--filename", "stall.bin", "--proxy-stall-after", strconv.Itoa(5*mib))
	h.assertComplete(t, res, run, "stall.bin", 12*mib, sum)
	if n := run.count("proxy stall "); n != 1 {
		t.Errorf("the proxy stalled %d connections, want 1", n)
	}
	cut := 0
	for _, l := range run.Lines("http PATCH ") {
		if strings.Contains(l, " status=503") {
			cut++
		}
	}
	if cut != 1 {
		t.Errorf("%d PATCH requests answered 503, want 1 (the stalled one)", cut)
	}
	if res.Retries < 1 {
		t.Errorf("the client retried %d times, want at least 1", res.Retries)
	}
	h.assertResumed(t, run, res)
}

// harness is one test's Caddy and upload folder.
type harness struct {
	ctx      context.Context
	dir      string // the site's upload folder (reflex_upload's root)
	addr     string // Caddy's address
	endpoint string // the tus endpoint
	caddy    *caddyrun.Server
	tusjsDir string
}

// siteConfig is what a test adds to the Caddyfile: global options and
// reflex_upload options, one a line.
type siteConfig struct {
	global, upload []string
}

// setup checks for node, installs the client, builds and starts Caddy.
func setup(t *testing.T, cfg ...siteConfig) *harness {
	t.Helper()
	requireNode(t)
	tusjsDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	npmOnce.Do(func() { npmErr = caddyrun.NPMInstall(tusjsDir, "tus-js-client") })
	if npmErr != nil {
		t.Fatalf("installing tus-js-client: %v", npmErr)
	}
	h := startCaddy(t, cfg...)
	h.tusjsDir = tusjsDir
	return h
}

// startCaddy builds Caddy and starts it on a fresh upload folder.
func startCaddy(t *testing.T, cfg ...siteConfig) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	caddyBin, err := caddyrun.Caddy()
	if err != nil {
		t.Fatalf("building Caddy: %v", err)
	}

	base := t.TempDir()
	dir := filepath.Join(base, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := caddyrun.FreeAddr(t)
	var global, upload []string
	for _, c := range cfg {
		global = append(global, c.global...)
		upload = append(upload, c.upload...)
	}
	config, err := supervisor.Caddy(caddyBin, base, supervisor.UploadSite(addr, dir, global, upload))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("files under %s:\n%s", dir, caddyrun.ListFiles(dir))
		}
	})
	c := caddyrun.Serve(t, ctx, config, caddyrun.Listening(addr))
	return &harness{ctx: ctx, dir: dir, addr: addr, endpoint: "http://" + addr + "/_upload/.uploads", caddy: c}
}

// requireNode skips the test when node or npm is missing, and fails it in CI.
func requireNode(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found: the tus-js-client tests need Node.js 18 or newer and npm "+
			"(on Debian: apt-get install -y nodejs npm)", strings.Join(missing, " and "))
	}
	t.Skip("install node and npm to run the tus-js-client tests")
}

// uploadResult is the JSON line upload.mjs prints.
type uploadResult struct {
	OK        bool   `json:"ok"`
	URL       string `json:"url"`
	BytesSent int64  `json:"bytesSent"`
	Error     string `json:"error"`
	Cuts      int    `json:"cuts"`
	Retries   int    `json:"retries"`
	MS        int64  `json:"ms"`
}

// nodeRun is one run of upload.mjs.
type nodeRun struct{ *noderun.Run }

// startUpload starts upload.mjs against the harness's endpoint; watch, when
// given, sees each stderr line as it comes.
func (h *harness) startUpload(t *testing.T, watch func(string), args ...string) *nodeRun {
	t.Helper()
	args = append([]string{filepath.Join(h.tusjsDir, "upload.mjs"), "--endpoint", h.endpoint}, args...)
	return &nodeRun{noderun.Start(t, h.ctx, h.tusjsDir, args, watch)}
}

// upload runs upload.mjs to its end.
func (h *harness) upload(t *testing.T, watch func(string), args ...string) (uploadResult, *nodeRun) {
	t.Helper()
	r := h.startUpload(t, watch, args...)
	return r.result(t), r
}

// result parses the JSON line of a finished run.
func (r *nodeRun) result(t *testing.T) uploadResult {
	t.Helper()
	exit := r.Wait()
	var res uploadResult
	line := strings.TrimSpace(r.Stdout())
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("upload.mjs (%v) printed no result line: %q", exit, line)
	}
	if !res.OK {
		t.Fatalf("upload failed (%v): %s", exit, res.Error)
	}
	if exit != nil {
		t.Fatalf("upload.mjs reported success but exited with %v", exit)
	}
	t.Logf("uploaded %d bytes in %d ms (retries %d, connections cut %d): %s", res.BytesSent, res.MS, res.Retries, res.Cuts, res.URL)
	return res
}

func (r *nodeRun) count(prefix string) int { return len(r.Lines(prefix)) }

// assertComplete checks the stored file and the upload's offset.
func (h *harness) assertComplete(t *testing.T, res uploadResult, run *nodeRun, name string, size int64, sum string) {
	t.Helper()
	if res.BytesSent != size {
		t.Errorf("bytesSent = %d, want %d", res.BytesSent, size)
	}
	stored := filepath.Join(h.dir, name)
	got, n, err := caddyrun.FileSHA256(stored)
	switch {
	case err != nil:
		t.Errorf("the completed upload is not stored (right after the client finished): %v", err)
	case n != size || got != sum:
		t.Errorf("%s: %d bytes, sha256 %s; want %d bytes, sha256 %s", stored, n, got, size, sum)
	}

	req, err := http.NewRequestWithContext(h.ctx, http.MethodHead, res.URL, nil)
	if err != nil {
		t.Fatalf("upload URL %q: %v", res.URL, err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("HEAD %s: %v", res.URL, err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Errorf("HEAD %s: status %d, want 200 or 204; headers %v", res.URL, resp.StatusCode, resp.Header)
	}
	if off := resp.Header.Get("Upload-Offset"); off != strconv.FormatInt(size, 10) {
		t.Errorf("HEAD %s: Upload-Offset %q, want %d; headers %v", res.URL, off, size, resp.Header)
	}
	t.Logf(".uploads after the upload:\n%s", caddyrun.ListFiles(filepath.Join(h.dir, ".uploads")))
}

// assertResumed checks that an interrupted upload was resumed (HEAD, then
// PATCH from the server's offset) rather than created anew.
func (h *harness) assertResumed(t *testing.T, run *nodeRun, res uploadResult) {
	t.Helper()
	if n := run.count("http POST "); n != 1 {
		t.Errorf("the client created %d uploads, want 1: it started over instead of resuming", n)
	}
	heads := run.Lines("http HEAD ")
	if len(heads) == 0 {
		t.Errorf("the client never asked for the offset (HEAD)")
	}
	for _, l := range heads {
		if !strings.Contains(l, " status=200 ") && !strings.Contains(l, " status=204 ") {
			t.Errorf("HEAD while resuming: %s", l)
		}
		if strings.Contains(l, " upload-offset=0") {
			t.Errorf("HEAD while resuming: the server had kept nothing: %s", l)
		}
	}
	if !strings.HasPrefix(res.URL, "http://") || !strings.Contains(res.URL, h.addr) {
		t.Errorf("upload URL %q is not on %s", res.URL, h.addr)
	}
}

// randomFile writes size pseudo-random bytes to a temp file and returns its
// path and SHA-256.
func randomFile(t *testing.T, size int64, seed uint64) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "source.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s [32]byte
	s[0], s[1] = byte(seed), byte(time.Now().UnixNano())
	rng := rand.NewChaCha8(s)
	hash := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, hash), mib)
	if _, err := io.CopyN(w, rng, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, hex.EncodeToString(hash.Sum(nil))
}
