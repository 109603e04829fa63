package caddyrun

import (
	"context"
	"strings"
	"testing"

	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

// Server is a child process of a test (Caddy, or an app behind it), run by
// the supervisor; it can be stopped or killed and started again.
type Server struct {
	*supervisor.Process
	ctx         context.Context
	ready       func(context.Context, *supervisor.Process) error
	raceChecked int // bytes of the log already checked for data races
}

// Ready says when a started process is ready; nil means at once.
type Ready func(context.Context, *supervisor.Process) error

// Listening is ready once addr accepts connections.
func Listening(addr string) Ready {
	return func(ctx context.Context, p *supervisor.Process) error { return p.WaitTCP(ctx, addr) }
}

// Serve starts cfg and waits until ready (ctx bounds the waits, also those
// of later starts). When the test ends the process is stopped (see Stop)
// and, if the test failed, the end of its log is shown.
func Serve(t *testing.T, ctx context.Context, cfg supervisor.Config, ready Ready) *Server {
	t.Helper()
	s := &Server{Process: supervisor.New(cfg), ctx: ctx, ready: ready}
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("%s's output:\n%s", s.Name(), Tail(s.Log(), 8000))
		}
	})
	s.Start(t)
	return s
}

// Start starts the process (again) and waits until it is ready.
func (s *Server) Start(t *testing.T) {
	t.Helper()
	if err := s.Process.Start(); err != nil {
		t.Fatal(err)
	}
	if s.ready != nil {
		if err := s.ready(s.ctx, s.Process); err != nil {
			t.Fatal(err)
		}
	}
}

// Stop stops the process (SIGTERM, SIGKILL after 20 s). Having to kill
// it, or a data race in what it printed since the last Stop, fails the test.
func (s *Server) Stop(t *testing.T) {
	t.Helper()
	if err := s.Process.Stop(); err != nil {
		t.Error(err)
	}
	log := s.Log()
	if fresh := log[min(s.raceChecked, len(log)):]; strings.Contains(fresh, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race:\n%s", s.Name(), Tail(fresh, 20000))
	}
	s.raceChecked = len(log)
}

// Kill ends the process with SIGKILL: no shutdown, no clean-up, as in a crash.
func (s *Server) Kill(t *testing.T) {
	t.Helper()
	if err := s.Process.Kill(); err != nil {
		t.Fatal(err)
	}
}
