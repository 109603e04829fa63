// Package noderun runs a Node.js script for an end-to-end test (the stock
// tus-js-client's upload.mjs): its stdout is kept whole, its stderr line by
// line (a watcher sees each line as it comes), it is killed when the test
// ends first, and its log is shown when the test failed.
package noderun

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
)

// A Run is one run of a script.
type Run struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	done   chan struct{}
	err    error // of Wait, once done is closed

	mu     sync.Mutex
	stderr []string
}

// Start runs node with args in dir until the script ends or ctx does;
// watch, when given, sees each stderr line as it comes.
func Start(t testing.TB, ctx context.Context, dir string, args []string, watch func(string)) *Run {
	t.Helper()
	r := &Run{done: make(chan struct{})}
	r.cmd = exec.CommandContext(ctx, "node", args...)
	r.cmd.Dir = dir
	r.cmd.WaitDelay = 5 * time.Second
	r.cmd.Stdout = &r.stdout
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	t.Cleanup(func() {
		select {
		case <-r.done:
		default: // the test ended early
			r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("node %s\nstderr:\n%s\nstdout: %s", strings.Join(args, " "), caddyrun.Tail(r.Stderr(), 12000), r.stdout.String())
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			r.mu.Lock()
			r.stderr = append(r.stderr, line)
			r.mu.Unlock()
			if watch != nil {
				watch(line)
			}
		}
		io.Copy(io.Discard, stderr)
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	return r
}

// Done is closed once the script has ended.
func (r *Run) Done() <-chan struct{} { return r.done }

// Wait waits for the end of the script and gives how it exited.
func (r *Run) Wait() error {
	<-r.done
	return r.err
}

// Stdout is what the script printed, once it ended.
func (r *Run) Stdout() string {
	<-r.done
	return r.stdout.String()
}

// Stderr is the script's log so far.
func (r *Run) Stderr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.stderr, "\n")
}

// Lines is the log lines so far that start with prefix.
func (r *Run) Lines(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.stderr {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}
