// Package caddyrun holds what the end-to-end tests with real clients share:
// Caddy built from ./cmd/caddy once per test process (with -race when the
// test binary has it, so a data race in the server fails the test), Serve,
// which runs a child process through e2e/supervisor for the length of a
// test, npm packages installed from a lockfile, and small helpers for
// failure output.
package caddyrun

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

// Time limits of the set-up steps.
const (
	buildTimeout = 8 * time.Minute // a cold build compiles all of Caddy
	npmTimeout   = 5 * time.Minute
)

var (
	buildOnce, plainOnce sync.Once
	caddyBin, plainBin   string
	buildErr, plainErr   error
	dirMu                sync.Mutex
	workDirs             []string // hold the built Caddys; Cleanup removes them
)

// Caddy returns the path of Caddy built from ./cmd/caddy, building it on the
// first call of the test process.
func Caddy() (string, error) {
	buildOnce.Do(func() { caddyBin, buildErr = build(RaceEnabled()) })
	return caddyBin, buildErr
}

// CaddyPlain returns the path of Caddy built from ./cmd/caddy without the
// race detector, whatever the test binary has: for measuring the server's
// memory, which the race detector multiplies.
func CaddyPlain() (string, error) {
	if !RaceEnabled() {
		return Caddy()
	}
	plainOnce.Do(func() { plainBin, plainErr = build(false) })
	return plainBin, plainErr
}

// Cleanup removes the built Caddy; call it from TestMain after m.Run.
func Cleanup() {
	dirMu.Lock()
	defer dirMu.Unlock()
	for _, d := range workDirs {
		os.RemoveAll(d)
	}
	workDirs = nil
}

func build(race bool) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	workDir, err := os.MkdirTemp("", "e2e-caddy-")
	if err != nil {
		return "", err
	}
	dirMu.Lock()
	workDirs = append(workDirs, workDir)
	dirMu.Unlock()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(workDir, "caddy")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/caddy")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = root
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(args, " "), root, err, out)
	}
	fmt.Fprintf(os.Stderr, "built Caddy (race=%v) in %v\n", race, time.Since(start).Round(time.Millisecond))
	return bin, nil
}

// RaceEnabled reports whether the test binary was built with -race.
func RaceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// RepoRoot walks up from the working directory to the folder with go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := supervisor.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// NPMInstall runs npm ci in dir unless node_modules already holds the
// version package.json pins of pkg. npm is told not to download browsers:
// the tests use Debian's.
func NPMInstall(dir, pkg string) error {
	var manifest struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &manifest); err != nil {
		return fmt.Errorf("package.json: %v", err)
	}
	var installed struct {
		Version string `json:"version"`
	}
	b, err = os.ReadFile(filepath.Join(dir, "node_modules", pkg, "package.json"))
	if err == nil && json.Unmarshal(b, &installed) == nil && installed.Version == manifest.Dependencies[pkg] {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1")
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	return nil
}

// FileSHA256 returns a file's sha256 (hex) and size.
func FileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ListFiles describes the tree under dir, for failure messages.
func ListFiles(dir string) string {
	var b strings.Builder
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", path, err)
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			fmt.Fprintf(&b, "  %s/\n", rel)
			return nil
		}
		if info, err := d.Info(); err == nil {
			fmt.Fprintf(&b, "  %s %d\n", rel, info.Size())
		}
		return nil
	})
	if b.Len() == 0 {
		return "  (none)\n"
	}
	return b.String()
}

// Tail returns the last n bytes of s.
func Tail(s string, n int) string { return supervisor.Tail(s, n) }
