package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary a child process: "listen ADDR" listens
// until it is signalled, "stubborn ADDR" listens and ignores SIGTERM,
// "fail" prints and exits 3.
const childEnv = "SUPERVISOR_TEST_CHILD"

func TestMain(m *testing.M) {
	mode, addr, _ := strings.Cut(os.Getenv(childEnv), " ")
	switch mode {
	case "":
		os.Exit(m.Run())
	case "fail":
		fmt.Println("child: cannot start")
		os.Exit(3)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("child:", err)
		os.Exit(1)
	}
	fmt.Println("child: listening on", addr)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	select {}
}

func childConfig(t *testing.T, log, mode string) Config {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Name: "child",
		Argv: []string{self},
		Env:  append(os.Environ(), childEnv+"="+mode),
		Log:  log,
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestStartWaitStopRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := freeAddr(t)
	log := filepath.Join(t.TempDir(), "child.log")
	p := New(childConfig(t, log, "listen "+addr))
	for run := 1; run <= 2; run++ {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitTCP(ctx, addr); err != nil {
			t.Fatal(err)
		}
		if err := p.Alive(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if err := p.Start(); err == nil {
			t.Errorf("run %d: a second Start of a running process succeeded", run)
		}
		if rss, err := p.RSS(); err != nil || rss <= 0 {
			t.Errorf("run %d: RSS %d, %v", run, rss, err)
		}
		if hwm, err := p.Status("VmHWM"); err != nil || hwm <= 0 {
			t.Errorf("run %d: VmHWM %d, %v", run, hwm, err)
		}
		if fds := p.FDs(); fds < 3 {
			t.Errorf("run %d: %d descriptors, want at least stdin, stdout, stderr", run, fds)
		}
		if cpu := p.CPUSeconds(); cpu < 0 {
			t.Errorf("run %d: CPU seconds %v", run, cpu)
		}
		stop := p.SamplePeaks(10*time.Millisecond, 1)
		time.Sleep(50 * time.Millisecond)
		if rss, fds := stop(); rss <= 0 || fds < 3 {
			t.Errorf("run %d: sampled peaks: RSS %d, %d descriptors", run, rss, fds)
		}
		if err := p.Stop(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if err := p.Alive(); err == nil || !strings.Contains(err.Error(), "exited") {
			t.Errorf("run %d: after Stop, Alive says %v", run, err)
		}
	}
	if got := strings.Count(p.Log(), "child: listening on "+addr); got != 2 {
		t.Errorf("the log has %d lines of the child's output, want one per run:\n%s", got, p.Log())
	}
	if got := strings.Count(p.Log(), "=== child: "); got != 2 {
		t.Errorf("the log has %d start headers, want 2:\n%s", got, p.Log())
	}
}

func TestExitBeforeReady(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := Start(childConfig(t, filepath.Join(t.TempDir(), "child.log"), "fail"))
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitTCP(ctx, freeAddr(t))
	if err == nil {
		t.Fatal("WaitTCP succeeded for a process that exited")
	}
	for _, want := range []string{"child (pid", "exit status 3", "child: cannot start"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WaitTCP's error lacks %q:\n%v", want, err)
		}
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := freeAddr(t)
	cfg := childConfig(t, filepath.Join(t.TempDir(), "child.log"), "stubborn "+addr)
	cfg.StopTimeout = 200 * time.Millisecond
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitTCP(ctx, addr); err != nil {
		t.Fatal(err)
	}
	err = p.Stop()
	if err == nil || !strings.Contains(err.Error(), "killed it") {
		t.Fatalf("Stop of a process that ignores SIGTERM: %v; want an error saying it was killed", err)
	}
	if p.Alive() == nil {
		t.Fatal("the process runs after Stop")
	}
}

func TestKill(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := freeAddr(t)
	p, err := Start(childConfig(t, filepath.Join(t.TempDir(), "child.log"), "stubborn "+addr))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitTCP(ctx, addr); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Alive(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("after Kill, Alive says %v; want the process killed", err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop of a process that is not running: %v", err)
	}
}

func TestUploadSite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		global, upload []string
		want           string
	}{
		{"defaults", nil, nil,
			"{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n\nhttp://127.0.0.1:9 {\n\treflex_upload {\n\t\troot \"/r\"\n\t}\n}\n"},
		{"options", []string{"grace_period 1s"}, []string{"fsync off", "hash none"},
			"{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n\tgrace_period 1s\n}\n\nhttp://127.0.0.1:9 {\n\treflex_upload {\n\t\troot \"/r\"\n\t\tfsync off\n\t\thash none\n\t}\n}\n"},
		{"admin set", []string{"admin 127.0.0.1:8"}, nil,
			"{\n\tauto_https off\n\tpersist_config off\n\tadmin 127.0.0.1:8\n}\n\nhttp://127.0.0.1:9 {\n\treflex_upload {\n\t\troot \"/r\"\n\t}\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := UploadSite("127.0.0.1:9", "/r", tc.global, tc.upload); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
