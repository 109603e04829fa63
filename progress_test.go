package reflexupload

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// rawUpload is an upload sent by hand over a TCP connection, so a test can
// send part of a body and then stall, or cut the connection.
type rawUpload struct {
	conn net.Conn
	br   *bufio.Reader
}

// startRawUpload sends the request head, the multipart head of one file
// named name whose data will be size bytes, and the first sent bytes of it.
func startRawUpload(t *testing.T, target string, header http.Header, name string, size, sent int) *rawUpload {
	t.Helper()
	const boundary = "raw-upload-boundary"
	head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" + name + "\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n"
	tail := "\r\n--" + boundary + "--\r\n"
	var req strings.Builder
	fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n",
		target, boundary, len(head)+size+len(tail))
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
	}
	req.WriteString("\r\n" + head)
	u := dialRaw(t, req.String())
	u.send(t, sent)
	return u
}

// dialRaw connects to the site and sends head as it is.
func dialRaw(t *testing.T, head string) *rawUpload {
	t.Helper()
	conn, err := net.Dial("tcp", hostOf(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	return &rawUpload{conn: conn, br: bufio.NewReader(conn)}
}

// send sends n more bytes of file data.
func (u *rawUpload) send(t *testing.T, n int) {
	t.Helper()
	if _, err := u.conn.Write(bytes.Repeat([]byte("d"), n)); err != nil {
		t.Fatal(err)
	}
}

// finish sends the closing delimiter.
func (u *rawUpload) finish(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(u.conn, "\r\n--raw-upload-boundary--\r\n"); err != nil {
		t.Fatal(err)
	}
}

// response reads the server's answer (bounded in time).
func (u *rawUpload) response(t *testing.T) (*http.Response, []byte) {
	t.Helper()
	_ = u.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(u.br, nil)
	if err != nil {
		t.Fatalf("reading the upload's response: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, body
}

// progressOf polls the progress endpoint once.
func progressOf(t *testing.T, id string, header ...string) progressBody {
	t.Helper()
	res, body := get(t, "/_upload/.uploads/"+id, header...)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("progress of %s: status %d, body %s", id, res.StatusCode, body)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("progress Cache-Control = %q; want no-store", cc)
	}
	return decode[progressBody](t, body)
}

// waitProgress polls (bounded) until cond holds for the upload's progress.
func waitProgress(t *testing.T, id string, cond func(progressBody) bool, header ...string) progressBody {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := progressOf(t, id, header...)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress of %s never got there; last %+v", id, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func deleteUpload(t *testing.T, id string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, siteOf(t)+"/_upload/.uploads/"+id, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, req)
}

func TestE2EProgress(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	if p := progressOf(t, "not-yet"); p.State != stateStarting || p.Received != 0 {
		t.Fatalf("unknown id: %+v; want starting", p)
	}

	const size = 300_000
	up := startRawUpload(t, "/_upload?X-Progress-ID=slow-1", nil, "slow.bin", size, 1000)
	var seen []int64
	for sent := 1000; sent < size; sent += 50_000 {
		p := waitProgress(t, "slow-1", func(p progressBody) bool { return p.Received >= int64(sent) })
		if p.State != stateUploading || p.Size == nil || *p.Size <= size || p.StartedAt == nil || p.Kind != kindMultipart {
			t.Fatalf("progress while uploading: %+v", p)
		}
		seen = append(seen, p.Received)
		up.send(t, min(50_000, size-sent))
	}
	up.finish(t)
	res, body := up.response(t)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %s", res.StatusCode, body)
	}
	if decode[uploadResult](t, body).UploadID != "slow-1" {
		t.Errorf("upload_id is not the X-Progress-ID: %s", body)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("received did not grow: %v", seen)
		}
	}
	p := progressOf(t, "slow-1")
	if p.State != stateDone || p.Received != *p.Size || len(p.Files) != 1 || p.Files[0].Size != size || p.Files[0].Path != "slow.bin" {
		t.Fatalf("progress when done: %+v", p)
	}
	assertStored(t, root, "slow.bin")

	t.Run("error state", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, siteOf(t)+"/_upload", strings.NewReader("not multipart"))
		req.Header.Set("X-Progress-ID", "broken-1")
		req.Header.Set("Content-Type", "text/plain")
		if res, _ := do(t, req); res.StatusCode != 400 {
			t.Fatalf("status %d", res.StatusCode)
		}
		if p := progressOf(t, "broken-1"); p.State != stateError || p.Status != 400 || p.Code != "invalid-request" {
			t.Fatalf("progress after a refusal: %+v", p)
		}
	})

	t.Run("bad and busy ids", func(t *testing.T) {
		for _, id := range []string{"has space", strings.Repeat("a", 129), "semi;colon"} {
			req, _ := http.NewRequest(http.MethodPost, siteOf(t)+"/_upload", strings.NewReader(""))
			req.Header.Set("X-Progress-ID", id)
			res, body := do(t, req)
			assertError(t, res, body, 400, "invalid-request", "")
		}
		busy := startRawUpload(t, "/_upload", http.Header{"X-Progress-Id": {"busy-1"}}, "busy.bin", 1000, 10)
		waitProgress(t, "busy-1", func(p progressBody) bool { return p.State == stateUploading })
		res, body := postFiles(t, "/_upload?X-Progress-ID=busy-1", nil, part{name: "other.bin", data: []byte("x")})
		assertError(t, res, body, 409, "upload-id-in-use", "")
		busy.send(t, 990)
		busy.finish(t)
		if res, body := busy.response(t); res.StatusCode != 201 {
			t.Fatalf("busy upload: %d %s", res.StatusCode, body)
		}
		// A finished id may be used again.
		res, body = postFiles(t, "/_upload?X-Progress-ID=busy-1", nil, part{name: "again.bin", data: []byte("x")})
		if res.StatusCode != 201 {
			t.Fatalf("reusing a finished id: %d %s", res.StatusCode, body)
		}
	})
}

// TestE2ECancelStalled cancels an upload whose client has stalled mid-body:
// the cancel must not wait for the client to send anything more.
func TestE2ECancelStalled(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	up := startRawUpload(t, "/_upload", http.Header{"X-Progress-Id": {"stall-1"}}, "stall.bin", 10<<20, 256<<10)
	waitProgress(t, "stall-1", func(p progressBody) bool { return p.Received >= 256<<10 })
	if files := storedFiles(t, root); len(files) != 1 || !strings.HasPrefix(files[0], reservedDir+"/"+tempPrefix) {
		t.Fatalf("expected one temp file while uploading, got %q", files)
	}

	res, body := deleteUpload(t, "stall-1")
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", res.StatusCode, body)
	}
	// The stalled uploader gets its answer without sending another byte.
	res, body = up.response(t)
	assertError(t, res, body, http.StatusConflict, "upload-cancelled", "")
	if p := progressOf(t, "stall-1"); p.State != stateCancelled || p.Status != 409 || p.Received < 256<<10 {
		t.Fatalf("progress after cancel: %+v", p)
	}
	waitStored(t, root)

	// Cancelling again, or something never seen, is a clear 4xx.
	res, body = deleteUpload(t, "stall-1")
	assertError(t, res, body, http.StatusConflict, "upload-finished", "")
	res, body = deleteUpload(t, "never-seen")
	assertError(t, res, body, http.StatusNotFound, "upload-not-found", "")
}

// TestE2EEventStream follows a paced upload with server-sent events.
func TestE2EEventStream(t *testing.T) {
	t.Parallel()
	startSite(t, "reflex_upload {\nroot ROOT\n}")
	req, _ := http.NewRequest(http.MethodGet, siteOf(t)+"/_upload/.uploads/sse-1", nil)
	req.Header.Set("Accept", "text/event-stream")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("event stream headers: %v", res.Header)
	}
	events := make(chan progressBody, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var p progressBody
				if json.Unmarshal([]byte(data), &p) == nil {
					events <- p
				}
			}
		}
	}()
	if p := <-events; p.State != stateStarting {
		t.Fatalf("first event %+v; want starting", p)
	}

	up := startRawUpload(t, "/_upload", http.Header{"X-Progress-Id": {"sse-1"}}, "sse.bin", 400_000, 0)
	for range 4 {
		up.send(t, 100_000)
		time.Sleep(300 * time.Millisecond) // paced, so the stream has something to report
	}
	up.finish(t)
	if res, body := up.response(t); res.StatusCode != 201 {
		t.Fatalf("upload: %d %s", res.StatusCode, body)
	}
	var got []progressBody
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case p, ok := <-events:
			if !ok {
				done = true
				break
			}
			got = append(got, p)
		case <-timeout:
			t.Fatalf("the event stream did not end; got %+v", got)
		}
	}
	uploading := 0
	for _, p := range got {
		if p.State == stateUploading {
			uploading++
		}
	}
	if uploading < 2 || len(got) == 0 || got[len(got)-1].State != stateDone || got[len(got)-1].Received == 0 {
		t.Fatalf("events: %+v; want several uploading events and a final done", got)
	}
}

func TestE2EOwnerScoping(t *testing.T) {
	t.Parallel()
	startSite(t, "reflex_upload {\nroot ROOT\n}")
	alice := http.Header{"Reflex-Client-Token": {"alice"}, "X-Progress-Id": {"owned-1"}}
	up := startRawUpload(t, "/_upload", alice, "a.bin", 1<<20, 1000)
	waitProgress(t, "owned-1", func(p progressBody) bool { return p.State == stateUploading }, "Reflex-Client-Token", "alice")

	for _, other := range [][]string{{"Reflex-Client-Token", "mallory"}, nil} {
		if p := progressOf(t, "owned-1", other...); p.State != stateStarting || p.Received != 0 {
			t.Errorf("another owner (%v) sees %+v; want an unknown upload", other, p)
		}
		res, body := deleteUpload(t, "owned-1", other...)
		assertError(t, res, body, http.StatusNotFound, "upload-not-found", "")
	}
	// The same id under another owner is another upload.
	res, body := postFiles(t, "/_upload", http.Header{"Reflex-Client-Token": {"bob"}, "X-Progress-Id": {"owned-1"}},
		part{name: "b.bin", data: []byte("b")})
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("bob's upload under the same id: %d %s", res.StatusCode, body)
	}

	res, body = deleteUpload(t, "owned-1", "Reflex-Client-Token", "alice")
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("owner's DELETE: %d %s", res.StatusCode, body)
	}
	res, body = up.response(t)
	assertError(t, res, body, http.StatusConflict, "upload-cancelled", "")

	t.Run("without an owner the id is the secret", func(t *testing.T) {
		res, body := postFiles(t, "/_upload?X-Progress-ID=open-1", nil, part{name: "o.bin", data: []byte("o")})
		if res.StatusCode != 201 {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
		if p := progressOf(t, "open-1", "Reflex-Client-Token", "anyone"); p.State != stateStarting {
			t.Fatalf("an owned request sees an unowned upload: %+v", p)
		}
		if p := progressOf(t, "open-1"); p.State != stateDone {
			t.Fatalf("an unowned upload: %+v", p)
		}
	})
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// progressBody is the progress JSON as a client reads it.
type progressBody struct {
	ID        string       `json:"id"`
	Kind      string       `json:"kind,omitempty"`
	State     string       `json:"state"`
	Received  int64        `json:"received"`
	Size      *int64       `json:"size,omitempty"`
	Speed     int64        `json:"speed"`
	StartedAt *time.Time   `json:"started_at,omitempty"`
	Status    int          `json:"status,omitempty"`
	Code      string       `json:"code,omitempty"`
	Files     []storedFile `json:"files,omitempty"`
}

// registryOf finds an open upload root, whose clock tests replace and
// whose progress registry they look into.
func registryOf(t *testing.T, root string) *uploadRoot {
	t.Helper()
	var reg *uploadRoot
	roots.Range(func(key, value any) bool {
		if key == root {
			reg = value.(*uploadRoot)
			return false
		}
		return true
	})
	if reg == nil {
		t.Fatalf("no upload root %s is open", root)
	}
	return reg
}

func TestE2ERetention(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\nprogress_retention 30s\n}")
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	reg := registryOf(t, root)
	reg.setClock(clock.Now)
	defer reg.setClock(time.Now)

	for i := range 3 {
		res, body := postFiles(t, fmt.Sprintf("/_upload?X-Progress-ID=ret-%d", i), nil, part{name: "r.bin", data: []byte("r")})
		if res.StatusCode != 201 {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
		clock.Advance(10 * time.Second)
	}
	// ret-0 finished 30s ago (at the edge), ret-1 20s ago, ret-2 10s ago.
	clock.Advance(time.Second)
	if p := progressOf(t, "ret-0"); p.State != stateStarting {
		t.Errorf("ret-0 past retention: %+v; want forgotten", p)
	}
	for _, id := range []string{"ret-1", "ret-2"} {
		if p := progressOf(t, id); p.State != stateDone {
			t.Errorf("%s within retention: %+v; want done", id, p)
		}
	}
	clock.Advance(20 * time.Second)
	if p := progressOf(t, "ret-2"); p.State != stateStarting {
		t.Errorf("ret-2 past retention: %+v", p)
	}
	if n := reg.progress.(*progress.Memory).Len(); n != 0 {
		t.Errorf("registry holds %d entries past retention; want 0", n)
	}
}

// TestE2EReload reloads the config while an upload is in flight: the
// upload's progress stays readable through the new config, and it completes.
func TestE2EReload(t *testing.T) {
	root := t.TempDir()
	config := func(maxSize string) string {
		return caddyGlobals("\tgrace_period 30s") + fmt.Sprintf(`	reflex_upload {
		root %s
		max_size %s
	}
}
`, root, maxSize)
	}
	tester := newTester(t)
	tester.InitServer(config("10MiB"), "caddyfile")
	up := startRawUpload(t, "/_upload", http.Header{"X-Progress-Id": {"reload-1"}}, "r.bin", 100_000, 50_000)
	waitProgress(t, "reload-1", func(p progressBody) bool { return p.Received >= 50_000 })

	newTester(t).InitServer(config("20MiB"), "caddyfile")
	// The new config is the one answering: 15 MiB passes its max_size only.
	if res, body := postFiles(t, "/_upload", nil, part{name: "15.bin", data: make([]byte, 15<<20)}); res.StatusCode != 201 {
		t.Fatalf("upload under the new config: %d %s", res.StatusCode, body)
	}
	if p := progressOf(t, "reload-1"); p.State != stateUploading || p.Received < 50_000 {
		t.Fatalf("after the reload: %+v; want the upload still in flight", p)
	}
	up.send(t, 50_000)
	up.finish(t)
	if res, body := up.response(t); res.StatusCode != http.StatusCreated {
		t.Fatalf("upload across the reload: %d %s", res.StatusCode, body)
	}
	if p := progressOf(t, "reload-1"); p.State != stateDone {
		t.Fatalf("after the upload: %+v", p)
	}
	if fi, err := os.Stat(filepath.Join(root, "r.bin")); err != nil || fi.Size() != 100_000 {
		t.Fatalf("stored file: %v %v", fi, err)
	}
}

// TestE2EMetricsAndPlaceholders checks the Prometheus metrics on Caddy's
// admin endpoint and the placeholders in an access log.
func TestE2EMetricsAndPlaceholders(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "access.log")
	startSite(t, fmt.Sprintf(`reflex_upload {
		root ROOT
		max_size 10
	}
	log {
		output file %s
		format json
	}
	log_append upload_id {http.reflex_upload.id}
	log_append upload_bytes {http.reflex_upload.bytes}
	log_append upload_files {http.reflex_upload.files}
	log_append upload_state {http.reflex_upload.state}`, logFile))
	res, body := postFiles(t, "/_upload?X-Progress-ID=metrics-ok", nil, part{name: "m.bin", data: []byte("12345")})
	if res.StatusCode != 201 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	res, body = postFiles(t, "/_upload", nil, part{name: "big.bin", data: make([]byte, 100)})
	assertError(t, res, body, 413, "file-too-large", "big.bin")

	res, body = do(t, mustRequest(t, http.MethodGet, caddyAdminURL()+"/metrics"))
	if res.StatusCode != 200 {
		t.Fatalf("metrics: %d", res.StatusCode)
	}
	for _, want := range []string{
		`caddy_reflex_upload_uploads_total{kind="multipart",result="done"}`,
		`caddy_reflex_upload_uploads_total{kind="multipart",result="error"}`,
		`caddy_reflex_upload_received_bytes_total{kind="multipart"}`,
		`caddy_reflex_upload_uploads_in_flight{kind="multipart"} 0`,
		`caddy_reflex_upload_upload_duration_seconds_count{kind="multipart",result="done"}`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if bytes.Contains(body, []byte("metrics-ok")) || bytes.Contains(body, []byte("m.bin")) {
		t.Error("metrics must not name uploads or files")
	}

	var entry map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for entry == nil && time.Now().Before(deadline) {
		data, _ := os.ReadFile(logFile)
		for line := range strings.SplitSeq(string(data), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil && e["upload_id"] == "metrics-ok" {
				entry = e
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if entry == nil {
		t.Fatal("no access log entry with upload_id metrics-ok")
	}
	if entry["upload_files"] != float64(1) || entry["upload_state"] != "done" || entry["upload_bytes"].(float64) < 5 {
		t.Fatalf("access log placeholders: %v", entry)
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestE2EIdleTimeout: a client that stops sending is dropped after
// idle_timeout, and its upload leaves nothing behind.
func TestE2EIdleTimeout(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\nidle_timeout 1s\n}")
	up := startRawUpload(t, "/_upload", http.Header{"X-Progress-Id": {"idle-1"}}, "idle.bin", 1<<20, 10_000)
	waitProgress(t, "idle-1", func(p progressBody) bool { return p.Received >= 10_000 })
	start := time.Now()
	res, body := up.response(t) // the client sends nothing more
	assertError(t, res, body, http.StatusBadRequest, "invalid-request", "idle.bin")
	if waited := time.Since(start); waited > 8*time.Second {
		t.Fatalf("dropped after %v; want about 1s", waited)
	}
	if p := progressOf(t, "idle-1"); p.State != stateError {
		t.Fatalf("progress: %+v", p)
	}
	waitStored(t, root)
}
