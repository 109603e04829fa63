//go:build linux

package instances_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
)

// TestTryInstancesS3 runs `bash scripts/try-instances --s3` as the README
// tells a person to (on a free port given in REFLEX_TRY_PORT instead of
// 8080, which the browser tests use), uploads through its load balancer a
// standard file and a resumable one of 12 MiB in 5 MiB PATCHes, reads both
// back with a range and the demo page, cancels a stalled upload, then sends
// it SIGINT (Ctrl-C): it exits 130, no process it started is left, and its
// temp folders, the bucket's too, are gone.
func TestTryInstancesS3(t *testing.T) {
	repo, err := caddyrun.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(caddyrun.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	lb := "http://127.0.0.1:" + port
	if signal.Ignored(syscall.SIGINT) {
		// A child inherits an ignored SIGINT, which bash cannot trap: catch
		// it here for the test, so that the script gets it as from a terminal.
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT)
		t.Cleanup(func() { signal.Stop(c) })
	}

	out := &syncBuffer{}
	cmd := exec.Command("bash", "scripts/try-instances", "--s3")
	cmd.Dir = repo
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REFLEX_TRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "REFLEX_TRY_PORT="+port)
	cmd.Stdout, cmd.Stderr = out, out
	// A group of its own: if the test fails half-way, the cleanup stops
	// everything the script started by the group's id.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	done := false
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the script's output:\n%s", caddyrun.Tail(out.String(), 4000))
		}
		if done {
			return
		}
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
		}
		syscall.Kill(-pgid, syscall.SIGKILL)
	})

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for !strings.Contains(out.String(), "Ctrl-C stops all") {
		select {
		case err := <-exited:
			done = true
			s := out.String()
			if strings.Contains(s, "versitygw is not built") || strings.Contains(s, "redis-server is missing") ||
				strings.Contains(s, "curl is missing") {
				if os.Getenv("CI") != "" {
					t.Fatalf("a tool is missing; CI must have it:\n%s", s)
				}
				t.Skipf("a tool is missing, see the script's output to run this test:\n%s", s)
			}
			t.Fatalf("the script exited before it was ready: %v", err)
		case <-ctx.Done():
			t.Fatal("the script was not ready in time")
		case <-time.After(100 * time.Millisecond):
		}
	}
	s := out.String()
	tmp := submatch(t, s, `\(log (\S+)/a\.log\)`)
	engines := submatch(t, s, `; source (\S+)/env`)
	enginePIDs := regexp.MustCompile(`\(pid (\d+)\)`).FindAllStringSubmatch(s, -1)
	if len(enginePIDs) != 2 {
		t.Fatalf("the script names %d engine process ids, want 2 (versitygw, redis-server)", len(enginePIDs))
	}
	bucket := filepath.Join(engines, "s3", "uploads")

	res, body := do(t, http.MethodGet, lb+"/", nil, nil)
	if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("reflex_upload demo")) {
		t.Fatalf("the demo page: %d, %.200q", res.StatusCode, body)
	}
	seen := map[string]bool{} // X-Instance of the answers to uploads and reads

	small := randomBytes(300_000, 21)
	mp, ct := multipartBody("small.bin", small)
	res, body = do(t, http.MethodPost, lb+"/_upload", map[string]string{"Content-Type": ct}, mp)
	seen[res.Header.Get("X-Instance")] = true
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("standard upload: %d %s", res.StatusCode, body)
	}
	var std struct {
		Files []struct{ URL, Sha256 string } `json:"files"`
	}
	if err := json.Unmarshal(body, &std); err != nil || len(std.Files) != 1 ||
		std.Files[0].URL != "/_upload/small.bin" || std.Files[0].Sha256 != sha256Hex(small) {
		t.Fatalf("standard upload's answer: %s (%v)", body, err)
	}

	const chunk = 5 * mib
	big := randomBytes(12*mib, 22)
	tusHdr := map[string]string{"Tus-Resumable": "1.0.0"}
	res, body = do(t, http.MethodPost, lb+"/_upload/.uploads", map[string]string{
		"Tus-Resumable":   "1.0.0",
		"Upload-Length":   strconv.Itoa(len(big)),
		"Upload-Metadata": "filename " + base64.StdEncoding.EncodeToString([]byte("big.bin")),
	}, nil)
	seen[res.Header.Get("X-Instance")] = true
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusCreated || !strings.HasPrefix(loc, "/_upload/.uploads/") {
		t.Fatalf("tus creation: %d, Location %q, %s", res.StatusCode, loc, body)
	}
	for off := 0; off < len(big); off += chunk {
		end := min(off+chunk, len(big))
		res, body = do(t, http.MethodPatch, lb+loc, map[string]string{
			"Tus-Resumable": "1.0.0",
			"Content-Type":  "application/offset+octet-stream",
			"Upload-Offset": strconv.Itoa(off),
		}, big[off:end])
		seen[res.Header.Get("X-Instance")] = true
		if res.StatusCode != http.StatusNoContent || res.Header.Get("Upload-Offset") != strconv.Itoa(end) {
			t.Fatalf("PATCH at %d: %d, Upload-Offset %q, %s", off, res.StatusCode, res.Header.Get("Upload-Offset"), body)
		}
	}
	res, body = do(t, http.MethodHead, lb+loc, tusHdr, nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Upload-Offset") != strconv.Itoa(len(big)) {
		t.Fatalf("HEAD after the last PATCH: %d, Upload-Offset %q", res.StatusCode, res.Header.Get("Upload-Offset"))
	}

	for _, f := range []struct {
		name       string
		data       []byte
		start, end int // the range, inclusive
	}{
		{"small.bin", small, 1000, 199_999},
		{"big.bin", big, 1000, chunk + 99}, // across the first PATCH's end
	} {
		res, body = do(t, http.MethodGet, lb+"/_upload/"+f.name,
			map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", f.start, f.end)}, nil)
		seen[res.Header.Get("X-Instance")] = true
		wantRange := fmt.Sprintf("bytes %d-%d/%d", f.start, f.end, len(f.data))
		if res.StatusCode != http.StatusPartialContent || res.Header.Get("Content-Range") != wantRange ||
			!bytes.Equal(body, f.data[f.start:f.end+1]) {
			t.Fatalf("GET %s with a range: %d, Content-Range %q (want %q), %d bytes (equal: %v)", f.name,
				res.StatusCode, res.Header.Get("Content-Range"), wantRange, len(body), bytes.Equal(body, f.data[f.start:f.end+1]))
		}
		// The bucket's folder, which the script names, holds the file.
		onDisk, err := os.ReadFile(filepath.Join(bucket, f.name))
		if err != nil || !bytes.Equal(onDisk, f.data) {
			t.Fatalf("%s in the bucket's folder: %d bytes, equal %v (%v)", f.name, len(onDisk), bytes.Equal(onDisk, f.data), err)
		}
	}
	// Cancel through the balancer: a standard upload paused after its first
	// bytes is cancelled by a DELETE, which any instance may receive.
	lbNode := &instance{name: "the balancer", addr: "127.0.0.1:" + port}
	const id, token = "tryout-cancel", "alice"
	up := startMultipart(t, lbNode, id, token, "cancelled.bin", randomBytes(2*mib, 23))
	if err := up.write(256 * kib); err != nil {
		t.Fatal(err)
	}
	waitProgress(t, lbNode, id, token, func(s snapshot) bool { return s.State == "uploading" && s.Received > 0 })
	res, body = do(t, http.MethodDelete, lb+"/_upload/.uploads/"+id, map[string]string{tokenHeader: token}, nil)
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE of the stalled upload: %d %s", res.StatusCode, body)
	}
	// The client goes on sending, as a browser does: the balancer's server
	// (Go's net/http) writes the answer only between two reads of the body
	// it forwards, so a client that stalls for good waits for its timeout.
	sending := make(chan struct{})
	go func() { defer close(sending); up.pace(64*kib, 10*time.Millisecond) }()
	res, body = up.response(t)
	up.conn.Close()
	<-sending
	switch res.StatusCode {
	case http.StatusConflict:
		assertJSON(t, "the cancelled upload's answer", body, `{"code": "upload-cancelled", "detail": "the upload was cancelled"}`)
	case http.StatusBadGateway:
		// The instance answered 409 and closed the connection while the
		// balancer was still forwarding the body: under load, the
		// balancer's own write fails before it reads that answer, and it
		// says 502 (README, "Running several instances"). The upload is
		// cancelled all the same, as its progress says.
		t.Logf("the balancer answered the cancelled upload with 502 %s", body)
	default:
		t.Fatalf("the cancelled upload's answer: %d %s; want 409 (or the balancer's 502)", res.StatusCode, body)
	}
	waitProgress(t, lbNode, id, token, func(s snapshot) bool { return s.State == "cancelled" })
	if _, err := os.Stat(filepath.Join(bucket, "cancelled.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cancelled.bin is in the bucket's folder (%v)", err)
	}

	if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("the answers came from instances %q, want a, b and c (round robin)", got)
	}

	// Ctrl-C.
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-exited:
		done = true
	case <-time.After(30 * time.Second):
		t.Fatal("the script still runs 30 s after SIGINT")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("the script's exit after SIGINT: %v, want exit status 130", err)
	}
	if left := groupProcesses(t, pgid); len(left) > 0 {
		t.Errorf("processes of the script left after SIGINT: %s", strings.Join(left, "; "))
	}
	for _, m := range enginePIDs {
		if state, comm := procState(m[1]); state != "" && state != "Z" {
			t.Errorf("engine process %s (%s) is left after SIGINT", m[1], comm)
		}
	}
	for _, dir := range []string{tmp, engines} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the script's folder %s is left after SIGINT (%v)", dir, err)
		}
	}
	if conn, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		conn.Close()
		t.Errorf("something still listens on the load balancer's port after SIGINT")
	}
}

// submatch returns the first group of re's first match in s.
func submatch(t *testing.T, s, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("the script's output has no %s", re)
	}
	return m[1]
}

// groupProcesses lists the live processes (not zombies, which have exited
// and wait only to be reaped) of process group pgid.
func groupProcesses(t *testing.T, pgid int) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 3 || fields[0] == "Z" || fields[2] != strconv.Itoa(pgid) {
			continue
		}
		left = append(left, e.Name()+" "+string(stat[bytes.IndexByte(stat, '(')+1:i]))
	}
	return left
}

// procState returns the state letter and command name of process pid, ""
// when there is none.
func procState(pid string) (state, comm string) {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return "", ""
	}
	i := bytes.LastIndexByte(stat, ')')
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) == 0 {
		return "", ""
	}
	return fields[0], string(stat[bytes.IndexByte(stat, '(')+1 : i])
}

// syncBuffer is a bytes.Buffer that the script's output and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
