package tusjs_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCrashDuringPatch kills Caddy with SIGKILL while a PATCH is in flight
// and starts it again: HEAD must give an offset whose bytes are all on disk
// and correct, and the upload must complete byte-identical from there.
func TestCrashDuringPatch(t *testing.T) {
	h := startCaddy(t)
	const size, sent = 64 * mib, 40 * mib
	src, sum := randomFile(t, size, 5)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + h.addr

	req, _ := http.NewRequest(http.MethodPost, h.endpoint, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", strconv.Itoa(size))
	req.Header.Set("Upload-Metadata", "filename Y3Jhc2guYmlu") // crash.bin
	res := send(t, req)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("creation: %d", res.StatusCode)
	}
	loc := res.Header.Get("Location")
	id := path.Base(loc)

	// One PATCH for the whole file, of which only 40 MiB are sent.
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"+
		"Content-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n", loc, h.addr, size)
	if _, err := conn.Write(data[:sent]); err != nil {
		t.Fatal(err)
	}
	// Kill Caddy once it has saved the upload's state mid-PATCH at least once.
	statePath := filepath.Join(h.dir, ".uploads", "tus", id+".json")
	for deadline := time.Now().Add(30 * time.Second); ; {
		var state struct {
			Offset int64 `json:"offset"`
		}
		if b, err := os.ReadFile(statePath); err == nil && json.Unmarshal(b, &state) == nil && state.Offset >= 16*mib {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upload's state never counted 16 MiB")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.caddy.Kill(t)
	conn.Close()
	h.caddy.Start(t)

	req, _ = http.NewRequest(http.MethodHead, base+loc, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	res = send(t, req)
	offset, err := strconv.Atoi(res.Header.Get("Upload-Offset"))
	if res.StatusCode != http.StatusOK || err != nil || offset < 16*mib || offset > sent {
		t.Fatalf("HEAD after the crash: %d, Upload-Offset %q; want 16 MiB to 40 MiB", res.StatusCode, res.Header.Get("Upload-Offset"))
	}
	onDisk, err := os.ReadFile(filepath.Join(h.dir, ".uploads", "tus", id))
	if err != nil || len(onDisk) < offset || !bytes.Equal(onDisk[:offset], data[:offset]) {
		t.Fatalf("the %d bytes HEAD counts are not all on disk and correct (file has %d, err %v)", offset, len(onDisk), err)
	}
	t.Logf("killed after the client sent %d MiB; resumed at %d MiB (%d bytes on disk past it, unconfirmed)",
		sent/mib, offset/mib, len(onDisk)-offset)

	req, _ = http.NewRequest(http.MethodPatch, base+loc, bytes.NewReader(data[offset:]))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", strconv.Itoa(offset))
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	res = send(t, req)
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Upload-Offset") != strconv.Itoa(size) {
		t.Fatalf("PATCH after the crash: %d, Upload-Offset %q", res.StatusCode, res.Header.Get("Upload-Offset"))
	}
	stored, err := os.ReadFile(filepath.Join(h.dir, "crash.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(stored); hex.EncodeToString(got[:]) != sum {
		t.Fatalf("crash.bin differs from the source (%d bytes)", len(stored))
	}
}

// send does a request with a bounded client and drains the answer.
func send(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	client := &http.Client{Timeout: time.Minute}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// TestTusJSShutdownDuringPatch stops Caddy (SIGTERM, default grace period,
// which is eternal) while tus-js-client sends a whole file in one PATCH:
// Caddy stops that PATCH at once, saves the upload at the exact offset it
// received, answers a status the client retries, and exits; started again,
// it lets the client resume from that offset to a byte-identical file.
func TestTusJSShutdownDuringPatch(t *testing.T) {
	h := setup(t)
	const size = 48 * mib
	src, sum := randomFile(t, size, 7)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	created := make(chan string, 1)
	watch := func(line string) {
		if strings.HasPrefix(line, "http POST ") {
			if _, loc, ok := strings.Cut(line, " location="); ok {
				select {
				case created <- path.Base(loc):
				default:
				}
			}
		}
	}
	// 4 MiB/s through the script's proxy: the one PATCH lasts about 12 s.
	run := h.startUpload(t, watch, "--file", src, "--filename", "term.bin", "--proxy-rate", strconv.Itoa(4*mib),
		"--retry-delays", "0,250,500,1000,1000,1000,2000,2000,2000,2000,2000,2000")
	var id string
	select {
	case id = <-created:
	case <-h.ctx.Done():
		t.Fatalf("no upload created in time")
	}
	dataPath := filepath.Join(h.dir, ".uploads", "tus", id)
	for {
		if fi, err := os.Stat(dataPath); err == nil && fi.Size() >= 6*mib {
			break
		}
		select {
		case <-run.Done():
			t.Fatalf("the upload ended before Caddy was stopped")
		case <-h.ctx.Done():
			t.Fatalf("the server never received 6 MiB")
		case <-time.After(10 * time.Millisecond):
		}
	}

	stopping := time.Now()
	h.caddy.Stop(t)
	took := time.Since(stopping)
	t.Logf("Caddy exited %v after SIGTERM (its own log: %s from the signal to \"shutdown complete\"; "+
		"a race-enabled build then sleeps 1 s before it exits)", took.Round(time.Millisecond), shutdownTime(h.caddy.Log()))
	// The aim is an exit within a second; 3 s leaves room for a loaded
	// machine and the race detector's sleep at exit.
	if took > 3*time.Second {
		t.Errorf("Caddy took %v to exit after SIGTERM, want about a second at most", took)
	}

	var state struct {
		Offset int64 `json:"offset"`
	}
	b, err := os.ReadFile(filepath.Join(h.dir, ".uploads", "tus", id+".json"))
	if err != nil || json.Unmarshal(b, &state) != nil {
		t.Fatalf("the upload's state after the stop: %v %s", err, b)
	}
	onDisk, err := os.ReadFile(dataPath)
	if err != nil {
		t.Fatal(err)
	}
	// Every byte received is counted: the saved offset is the data's length,
	// not the last 16 MiB checkpoint (there was none yet).
	if state.Offset < 6*mib || state.Offset != int64(len(onDisk)) || !bytes.Equal(onDisk, data[:len(onDisk)]) {
		t.Fatalf("saved offset %d, %d bytes on disk (matching the source: %v); want the offset to count all of them, at least 6 MiB",
			state.Offset, len(onDisk), bytes.Equal(onDisk, data[:len(onDisk)]))
	}
	t.Logf("stopped at offset %d (%.1f MiB)", state.Offset, float64(state.Offset)/mib)
	select {
	case <-run.Done():
		t.Fatalf("the upload ended while Caddy was down")
	case <-time.After(300 * time.Millisecond):
	}

	h.caddy.Start(t)
	<-run.Done()
	res := run.result(t)
	h.assertComplete(t, res, run, "term.bin", size, sum)
	h.assertResumed(t, run, res)
	// The PATCH in flight is answered 503 and retried. The answer can be
	// lost with the connection: Caddy exits at once, and the kernel resets
	// a socket closed with body bytes still unread, which the client sees
	// as a failed request (status 0) and retries just the same.
	patches, retries := run.Lines("http PATCH "), run.Lines("retry ")
	answered503 := len(patches) >= 2 && strings.Contains(patches[0], " status=503")
	lost := len(patches) >= 1 && len(retries) >= 1 && strings.Contains(retries[0], " status=0 retry=true")
	if !answered503 && !lost {
		t.Errorf("PATCH answers %q, retries %q; want the first PATCH answered 503 (or cut) and retried, then the resumed one", patches, retries)
	}
	resumed := false
	for _, l := range run.Lines("http HEAD ") {
		if strings.Contains(l, " status=200") && strings.Contains(l, " upload-offset="+strconv.FormatInt(state.Offset, 10)) {
			resumed = true
		}
	}
	if !resumed {
		t.Errorf("no HEAD answered the saved offset %d: %q", state.Offset, run.Lines("http HEAD "))
	}
}

// TestShutdownMultipartAfterGrace stops Caddy (SIGTERM, grace_period 1s)
// while a standard upload is in flight and stalled: a standard upload cannot
// resume, so it is left to the grace period; when that ends it is cut, and
// it leaves nothing behind, no stored file and no temp file.
func TestShutdownMultipartAfterGrace(t *testing.T) {
	h := startCaddy(t, siteConfig{global: []string{"grace_period 1s"}})
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const boundary = "b0undary"
	head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"files\"; filename=\"std.bin\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n"
	fmt.Fprintf(conn, "POST /_upload HTTP/1.1\r\nHost: %s\r\nX-Progress-ID: std-1\r\nContent-Type: multipart/form-data; boundary=%s\r\n"+
		"Content-Length: %d\r\n\r\n%s", h.addr, boundary, len(head)+10*mib, head)
	if _, err := conn.Write(bytes.Repeat([]byte("s"), 2*mib)); err != nil {
		t.Fatal(err)
	}
	for {
		req, _ := http.NewRequestWithContext(h.ctx, http.MethodGet, "http://"+h.addr+"/_upload/.uploads/std-1", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			Received int64 `json:"received"`
		}
		json.NewDecoder(res.Body).Decode(&p)
		res.Body.Close()
		if p.Received >= 2*mib {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopping := time.Now()
	h.caddy.Stop(t)
	t.Logf("Caddy exited %v after SIGTERM (grace period 1s)", time.Since(stopping).Round(time.Millisecond))
	var left []string
	filepath.WalkDir(h.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(h.dir, p)
			left = append(left, rel)
		}
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("the cut standard upload left %q", left)
	}
}

// shutdownTime reads, in Caddy's log, the time from the last stop signal to
// "shutdown complete".
func shutdownTime(log string) string {
	var start, end float64
	for _, line := range strings.Split(log, "\n") {
		var entry struct {
			TS  float64 `json:"ts"`
			Msg string  `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil {
			continue
		}
		switch entry.Msg {
		case "shutting down apps, then terminating":
			start, end = entry.TS, 0
		case "shutdown complete":
			end = entry.TS
		}
	}
	if start == 0 || end == 0 {
		return "not found"
	}
	return time.Duration((end - start) * float64(time.Second)).Round(time.Millisecond).String()
}
