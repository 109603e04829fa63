// Package memory_test holds a few hundred slow uploads open at once against
// a real Caddy with reflex_upload (a child process, built without the race
// detector, on a random loopback port) and checks that the server's resident
// memory, and Go's heap in use, grow by less than a generous bound per
// upload, so that a regression to a buffer of a megabyte or so per upload
// fails. See bench/many for the full measurement against tusd.
package memory_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

const (
	uploads        = 300             // at once: half multipart, half tus
	fileSize       = 1 << 20         // each upload's file
	pieces         = 32              // writes per body
	pace           = 4 * time.Second // each body is spread over this
	ramp           = time.Second     // clients start over this
	boundPerUpload = 192 << 10       // peak resident growth, and heap growth mid-burst, allowed per upload
	boundary       = "----MemoryTestBoundary7MA4YWxkTrZu0gW"
)

func TestMain(m *testing.M) {
	code := m.Run()
	caddyrun.Cleanup()
	os.Exit(code)
}

// TestMemoryPerSlowUpload runs uploads slow uploads at once, each sending
// 1 MiB over 4 s, and bounds per upload the growth of Caddy's resident
// memory (peak, sampled every 100 ms from /proc) and of Go's heap in use
// mid-burst (from the admin endpoint's /debug/vars). A module that holds a
// 1 MiB buffer per upload while it waits for the network fails: its heap
// grows by about 1 MiB per upload, and its resident memory too once the
// buffers are filled (pages of a fresh buffer that no read reached are not
// resident yet, so the heap is the check that sees them).
// REFLEX_MEMORY_TEST_CADDY names another Caddy binary to measure instead
// (to check that the test fails on an older build).
func TestMemoryPerSlowUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("holds hundreds of uploads open for seconds; not short")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to read the server's resident memory")
	}
	bin := os.Getenv("REFLEX_MEMORY_TEST_CADDY")
	if bin == "" {
		var err error
		if bin, err = caddyrun.CaddyPlain(); err != nil {
			t.Fatal(err)
		}
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 4*uploads {
		lim.Cur = min(lim.Max, 4*uploads)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	addr, admin := caddyrun.FreeAddr(t), caddyrun.FreeAddr(t)
	cfg, err := supervisor.Caddy(bin, dir, supervisor.UploadSite(addr, filepath.Join(dir, "files"), []string{"admin " + admin}, []string{"fsync off"}))
	if err != nil {
		t.Fatal(err)
	}
	caddy := caddyrun.Serve(t, ctx, cfg, caddyrun.Listening(addr))
	time.Sleep(500 * time.Millisecond) // settle
	base, err := caddy.RSS()
	if err != nil {
		t.Fatal(err)
	}
	heapBase, err := heapInUse(admin)
	if err != nil {
		t.Fatal(err)
	}
	heapMid := make(chan uint64, 1)
	go func() {
		// Every upload is under way by then.
		time.Sleep(ramp + pace/2)
		h, err := heapInUse(admin)
		if err != nil {
			t.Errorf("reading Go's memory statistics mid-burst: %v", err)
		}
		heapMid <- h
	}()

	peaks := caddy.SamplePeaks(100*time.Millisecond, 0)

	data := make([]byte, fileSize)
	rand.Read(data)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr sync.Once
	deadline := time.Now().Add(90 * time.Second)
	for i := range uploads {
		wg.Go(func() {
			time.Sleep(ramp * time.Duration(i) / uploads)
			var err error
			if i%2 == 0 {
				err = multipartUpload(addr, i, data, deadline)
			} else {
				err = tusUpload(addr, i, data, deadline)
			}
			if err != nil {
				failed.Add(1)
				firstErr.Do(func() { t.Errorf("upload %d: %v", i, err) })
			}
		})
	}
	wg.Wait()
	peak, _ := peaks()

	growth := peak - base
	per := growth / uploads
	t.Logf("%d slow uploads at once (%d multipart, %d tus), %d failed: Caddy's resident memory %d MiB before, peak +%.1f MiB, %.1f KiB per upload (bound %d KiB)",
		uploads, (uploads+1)/2, uploads/2, failed.Load(), base>>20, float64(growth)/(1<<20), float64(per)/1024, boundPerUpload>>10)
	if failed.Load() > 0 {
		t.Errorf("%d of %d uploads failed", failed.Load(), uploads)
	}
	if per > boundPerUpload {
		t.Errorf("peak resident memory grew by %.1f KiB per slow upload; the bound is %d KiB", float64(per)/1024, boundPerUpload>>10)
	}
	heapPer := (int64(<-heapMid) - int64(heapBase)) / uploads
	t.Logf("Go's heap in use mid-burst: +%.1f KiB per upload (bound %d KiB)", float64(heapPer)/1024, boundPerUpload>>10)
	if heapPer > boundPerUpload {
		t.Errorf("Go's heap in use grew by %.1f KiB per slow upload mid-burst; the bound is %d KiB", float64(heapPer)/1024, boundPerUpload>>10)
	}
}

// heapInUse reads Go's heap in use (runtime.MemStats.HeapInuse) from the
// expvar handler of Caddy's admin endpoint.
func heapInUse(admin string) (uint64, error) {
	resp, err := http.Get("http://" + admin + "/debug/vars")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var v struct{ Memstats struct{ HeapInuse uint64 } }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, err
	}
	if v.Memstats.HeapInuse == 0 {
		return 0, fmt.Errorf("no memstats in %s/debug/vars", admin)
	}
	return v.Memstats.HeapInuse, nil
}

// multipartUpload sends one paced multipart upload and checks the answer.
func multipartUpload(addr string, i int, data []byte, deadline time.Time) error {
	conn, br, err := dial(addr, deadline)
	if err != nil {
		return err
	}
	defer conn.Close()
	head := fmt.Sprintf("--%s\r\nContent-Disposition: form-data; name=\"files\"; filename=\"m%d.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n", boundary, i)
	tail := "\r\n--" + boundary + "--\r\n"
	req := fmt.Sprintf("POST /_upload HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s",
		addr, boundary, len(head)+len(data)+len(tail), head)
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	if err := paced(conn, data); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, tail); err != nil {
		return err
	}
	_, err = answer(br, http.StatusCreated)
	return err
}

// tusUpload creates a tus upload and sends it in one paced PATCH.
func tusUpload(addr string, i int, data []byte, deadline time.Time) error {
	conn, br, err := dial(addr, deadline)
	if err != nil {
		return err
	}
	defer conn.Close()
	md := "filename " + base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("t%d.bin", i)))
	req := fmt.Sprintf("POST /_upload/.uploads HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Length: %d\r\nUpload-Metadata: %s\r\nContent-Length: 0\r\n\r\n",
		addr, len(data), md)
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	resp, err := answer(br, http.StatusCreated)
	if err != nil {
		return fmt.Errorf("creation: %w", err)
	}
	loc := resp.Header.Get("Location")
	req = fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n",
		loc, addr, len(data))
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	if err := paced(conn, data); err != nil {
		return err
	}
	resp, err = answer(br, http.StatusNoContent)
	if err == nil && resp.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
		err = fmt.Errorf("Upload-Offset %q after the PATCH", resp.Header.Get("Upload-Offset"))
	}
	return err
}

func dial(addr string, deadline time.Time) (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(deadline)
	return conn, bufio.NewReaderSize(conn, 512), nil
}

// paced writes data in pieces spread over pace.
func paced(conn net.Conn, data []byte) error {
	start := time.Now()
	for k := range pieces {
		if _, err := conn.Write(data[len(data)*k/pieces : len(data)*(k+1)/pieces]); err != nil {
			return err
		}
		time.Sleep(time.Until(start.Add(pace * time.Duration(k+1) / pieces)))
	}
	return nil
}

// answer reads a response and checks its status.
func answer(br *bufio.Reader, status int) (*http.Response, error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if resp.StatusCode != status {
		return resp, fmt.Errorf("%s: %s", resp.Status, body)
	}
	return resp, nil
}
