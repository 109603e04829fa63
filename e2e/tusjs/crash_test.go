package tusjs_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
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
	base := "http://" + h.caddy.addr

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
	conn, err := net.Dial("tcp", h.caddy.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"+
		"Content-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n", loc, h.caddy.addr, size)
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
	h.caddy.kill(t)
	conn.Close()
	h.caddy.start(t)

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
