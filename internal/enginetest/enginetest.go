// Package enginetest starts the real engines that the shared backends are
// tested against, one private process per test, on a free loopback port
// with its own data folder, stopped (by its process) when the test ends.
//
// A missing engine fails the test in CI (CI set) and skips it elsewhere
// with a message saying what to install: `bash scripts/engines/install`
// installs them all.
package enginetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds the wait for an engine to listen.
const startTimeout = 10 * time.Second

// Redis starts a redis-server of the test's own and returns its address
// (127.0.0.1:port). It keeps no data on disk beyond the test's temp folder.
func Redis(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		missing(t, "redis-server", "apt-get install redis-server")
	}
	dir := t.TempDir()
	var last error
	for range 5 { // a free port can be taken between the pick and the bind
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
			"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
		if last = start(t, cmd, addr); last == nil {
			return addr
		}
	}
	t.Fatalf("starting redis-server: %v", last)
	return ""
}

// missing fails the test in CI and skips it elsewhere.
func missing(t testing.TB, tool, install string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing (%s, or bash scripts/engines/install); CI must have it", tool, install)
	}
	t.Skipf("%s is missing: %s (or bash scripts/engines/install) to run this test", tool, install)
}

// start starts cmd, waits until addr accepts connections and arranges for
// the process to be stopped when the test ends. Its output is shown when
// the test fails.
func start(t testing.TB, cmd *exec.Cmd, addr string) error {
	t.Helper()
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited at start (%v): %s", filepath.Base(cmd.Path), err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s does not listen on %s after %v: %s", filepath.Base(cmd.Path), addr, startTimeout, out.String())
		}
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
	return nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
