// Package supervisor runs the child processes of this repository's
// end-to-end tests and benchmarks (Caddy, tusd, an app): it starts one with
// its output appended to a log file, waits until it is ready, stops it
// (a signal, then SIGKILL after a bound), and reads what the benchmarks
// measure of it from /proc (resident memory, its peak, CPU time,
// descriptors).
//
// It is a package of the main module outside internal/ so that the bench
// module (which holds tusd and so cannot be part of the main module) can
// import it through a replace directive. It is tooling for this
// repository, not an API.
package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config describes a child process.
type Config struct {
	// Name names the process in messages: "Caddy", "uvicorn", "tusd".
	Name string
	// Argv is the program and its arguments.
	Argv []string
	// Env is the child's whole environment; nil means this process's.
	Env []string
	// Dir is the child's working directory; "" means this process's.
	Dir string
	// Log is the file that the child's stdout and stderr are appended to
	// (created if missing); each start writes a header line first.
	Log string
	// StopTimeout is how long Stop waits after SIGTERM before it sends
	// SIGKILL; default 20 s.
	StopTimeout time.Duration
}

// logTailBytes is how much of the log an error message quotes.
const logTailBytes = 4000

// Process is a child process that can be started again after it exited.
// Its methods may be called from several goroutines.
type Process struct {
	cfg Config

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	waitErr error         // of cmd.Wait, once exited is closed
}

// New returns a Process for cfg, not started.
func New(cfg Config) *Process {
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 20 * time.Second
	}
	return &Process{cfg: cfg}
}

// Start starts a process for cfg; wait for it with WaitTCP or WaitUntil.
func Start(cfg Config) (*Process, error) {
	p := New(cfg)
	return p, p.Start()
}

// Start starts the process, or starts it again once it has exited.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closed(p.exited) {
		return fmt.Errorf("%s is running already (pid %d)", p.cfg.Name, p.cmd.Process.Pid)
	}
	logFile, err := os.OpenFile(p.cfg.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor
	fmt.Fprintf(logFile, "=== %s: %s (%s)\n", p.cfg.Name, strings.Join(p.cfg.Argv, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.cfg.Argv[0], p.cfg.Argv[1:]...)
	cmd.Env, cmd.Dir = p.cfg.Env, p.cfg.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.cfg.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.waitErr = cmd, exited, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// state returns the current run's command and exit channel.
func (p *Process) state() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.exited
}

// Name is the process's name in messages.
func (p *Process) Name() string { return p.cfg.Name }

// PID is the process id of the current (or last) run; 0 before Start.
func (p *Process) PID() int {
	cmd, _ := p.state()
	if cmd == nil {
		return 0
	}
	return cmd.Process.Pid
}

// Alive returns nil while the process runs, else an error with its exit
// status and the end of its log.
func (p *Process) Alive() error {
	cmd, exited := p.state()
	if cmd == nil {
		return fmt.Errorf("%s was not started", p.cfg.Name)
	}
	if !closed(exited) {
		return nil
	}
	p.mu.Lock()
	err := p.waitErr
	p.mu.Unlock()
	return fmt.Errorf("%s (pid %d) exited (%v)%s", p.cfg.Name, cmd.Process.Pid, err, p.logNote())
}

// WaitUntil polls cond every 50 ms until it holds. It fails when the
// process exits or ctx ends first, with the end of the log.
func (p *Process) WaitUntil(ctx context.Context, what string, cond func() bool) error {
	_, exited := p.state()
	for !cond() {
		select {
		case <-exited:
			return fmt.Errorf("waiting for %s: %w", what, p.Alive())
		case <-ctx.Done():
			return fmt.Errorf("%s: timed out waiting for %s%s", p.cfg.Name, what, p.logNote())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// WaitTCP waits until addr accepts TCP connections.
func (p *Process) WaitTCP(ctx context.Context, addr string) error {
	return p.WaitUntil(ctx, "it to listen on "+addr, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
}

// Stop sends SIGTERM and waits for the process to exit; after
// StopTimeout it kills it and returns an error saying so. A process that
// is not running is left alone.
func (p *Process) Stop() error {
	cmd, exited := p.state()
	if cmd == nil || closed(exited) {
		return nil
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(p.cfg.StopTimeout):
	}
	cmd.Process.Kill()
	<-exited
	return fmt.Errorf("%s did not exit within %v of SIGTERM; killed it", p.cfg.Name, p.cfg.StopTimeout)
}

// Kill ends the process with SIGKILL (no shutdown, as in a crash) and
// waits for it.
func (p *Process) Kill() error {
	cmd, exited := p.state()
	if cmd == nil || closed(exited) {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil {
		return fmt.Errorf("killing %s: %w", p.cfg.Name, err)
	}
	<-exited
	return nil
}

// Log returns the whole log: the output of every run.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.cfg.Log)
	return string(b)
}

// LogPath is the log file's path.
func (p *Process) LogPath() string { return p.cfg.Log }

// logNote is the end of the log, for error messages.
func (p *Process) logNote() string {
	return fmt.Sprintf("\n--- %s's log (%s), end ---\n%s", p.cfg.Name, p.cfg.Log, Tail(p.Log(), logTailBytes))
}

// Tail returns the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
