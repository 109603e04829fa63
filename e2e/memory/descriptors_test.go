package memory_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

// TestOutOfDescriptors runs Caddy with a small open-files limit and 40
// slow uploads at once. With room for the 40 sockets and a few more, all
// complete: a slow upload holds its temp file open only while it writes.
// With less room than the sockets need, every upload either completes
// (201) or is refused with 503 server-busy as JSON, none hangs, nothing is
// left in the private folder, and the refusal is logged.
func TestOutOfDescriptors(t *testing.T) {
	t.Run("room for the sockets", func(t *testing.T) { outOfDescriptors(t, 60, false) })
	t.Run("not enough for the sockets", func(t *testing.T) { outOfDescriptors(t, 48, true) })
}

func outOfDescriptors(t *testing.T, limit int, refusals bool) {
	if testing.Short() {
		t.Skip("not short")
	}
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prlimit (util-linux) is needed")
		}
		t.Skip("needs prlimit (util-linux) to start Caddy with a small open-files limit")
	}
	bin, err := caddyrun.Caddy()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "files")
	addr := caddyrun.FreeAddr(t)
	cfg, err := supervisor.Caddy(bin, dir, supervisor.UploadSite(addr, root, nil, []string{"fsync off"}))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Argv = append([]string{prlimit, fmt.Sprintf("--nofile=%d:%d", limit, limit), "--"}, cfg.Argv...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	caddy := caddyrun.Serve(t, ctx, cfg, caddyrun.Listening(addr))

	const n = 40
	data := make([]byte, 128<<10)
	rand.Read(data)
	var mu sync.Mutex
	statuses := map[string]int{}
	var wg sync.WaitGroup
	deadline := time.Now().Add(90 * time.Second)
	for i := range n {
		wg.Go(func() {
			status, code, err := slowMultipart(addr, i, data, deadline)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				statuses["error"]++
				t.Errorf("upload %d: %v", i, err)
			case status == http.StatusCreated:
				statuses["201"]++
			case status == http.StatusServiceUnavailable && code == "server-busy":
				statuses["503 server-busy"]++
			default:
				statuses[fmt.Sprintf("%d %s", status, code)]++
				t.Errorf("upload %d: %d %q; want 201 or 503 server-busy", i, status, code)
			}
		})
	}
	wg.Wait()
	t.Logf("%d slow uploads at once with an open-files limit of %d: %v", n, limit, statuses)
	if refusals && statuses["503 server-busy"] == 0 {
		t.Errorf("no upload was refused with 503 server-busy; the limit did not bite: %v", statuses)
	}
	if !refusals && statuses["201"] != n {
		t.Errorf("%d of %d uploads completed; want all: %v", statuses["201"], n, statuses)
	}
	// Nothing left behind: no temp file, and a stored file per 201. A temp
	// file whose removal met the limit is removed once descriptors are
	// free again: wait for that.
	var stored, temps []string
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		stored, temps = nil, nil
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				if strings.HasPrefix(rel, ".uploads") {
					temps = append(temps, rel)
				} else {
					stored = append(stored, rel)
				}
			}
			return nil
		})
		if len(temps) == 0 || time.Now().After(end) {
			break
		}
	}
	if len(temps) > 0 {
		t.Errorf("left in the private folder: %q", temps)
	}
	if len(stored) != statuses["201"] {
		t.Errorf("%d files stored; want %d", len(stored), statuses["201"])
	}
	if refusals && !strings.Contains(caddy.Log(), "server busy") {
		t.Errorf("no log line about the refusal; log:\n%s", caddyrun.Tail(caddy.Log(), 3000))
	}
}

// slowMultipart sends one upload of data over about 2 s and returns the
// answer's status and JSON code.
func slowMultipart(addr string, i int, data []byte, deadline time.Time) (int, string, error) {
	conn, br, err := dial(addr, deadline)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	head := fmt.Sprintf("--%s\r\nContent-Disposition: form-data; name=\"files\"; filename=\"d%d.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n", boundary, i)
	tail := "\r\n--" + boundary + "--\r\n"
	req := fmt.Sprintf("POST /_upload HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s",
		addr, boundary, len(head)+len(data)+len(tail), head)
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, "", err
	}
	for k := range 16 {
		// A refused upload is answered before its body ends: stop sending.
		if _, err := conn.Write(data[len(data)*k/16 : len(data)*(k+1)/16]); err != nil {
			break
		}
		time.Sleep(125 * time.Millisecond)
	}
	_, _ = io.WriteString(conn, tail)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct{ Code string }
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body)
	return resp.StatusCode, body.Code, nil
}
