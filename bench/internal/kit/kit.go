// Package kit holds what the benchmark commands share: clean-up on exit
// and on signals, size flags, the file content, the servers as child
// processes with their memory measured, and the figures of the summaries.
package kit

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// MiB is a mebibyte.
const MiB = 1 << 20

// Everything registered with AtCleanup runs once, in reverse order, on
// normal exit (Exit), on failure and on SIGINT, SIGTERM or SIGHUP.
var (
	cleanupMu   sync.Mutex
	cleanupFns  []func()
	cleanupOnce sync.Once
)

// AtCleanup registers f to run at exit.
func AtCleanup(f func()) {
	cleanupMu.Lock()
	cleanupFns = append(cleanupFns, f)
	cleanupMu.Unlock()
}

func runCleanups() {
	cleanupOnce.Do(func() {
		cleanupMu.Lock()
		fns := cleanupFns
		cleanupFns = nil
		cleanupMu.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	})
}

// Main runs the clean-ups when a signal arrives (and exits 130), runs
// run, then the clean-ups, and exits 1 with the error if run failed.
func Main(run func() error) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\ngot %v, cleaning up\n", s)
		runCleanups()
		os.Exit(130)
	}()
	err := run()
	runCleanups()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nFAIL: %v\n", err)
		os.Exit(1)
	}
}

// Usage prints msg and exits 2, for a bad command line.
func Usage(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}

// Size is a flag of bytes.
type Size int64

func (s *Size) String() string { return strconv.FormatInt(int64(*s), 10) }

// Set accepts plain bytes (1073741824) or a binary suffix (64MiB, 1G, 512k).
func (s *Size) Set(v string) error {
	str := strings.TrimSpace(strings.ToLower(v))
	mult := int64(1)
	for _, suf := range []struct {
		s string
		m int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1}} {
		if strings.HasSuffix(str, suf.s) {
			str, mult = strings.TrimSuffix(str, suf.s), suf.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(str), 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("invalid size %q (want bytes, e.g. 1073741824 or 1GiB)", v)
	}
	*s = Size(n * mult)
	return nil
}

// AbsFile makes a path to a file (such as -caddy) absolute and checks that
// it is a file.
func AbsFile(flagName, p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() {
		return "", fmt.Errorf("%s %q: not a file (%v)", flagName, p, err)
	}
	return abs, nil
}

// TempDir makes the run's temp dir, removed at exit unless keep.
func TempDir(prefix string, keep bool) (string, error) {
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	AtCleanup(func() {
		if keep {
			fmt.Printf("kept temp dir %s\n", base)
			return
		}
		os.RemoveAll(base)
	})
	return base, nil
}

// Mkdir makes base/name and returns its path.
func Mkdir(base, name string) (string, error) {
	d := filepath.Join(base, name)
	return d, os.Mkdir(d, 0o755)
}

// ListDir names what is under dir (20 at most), for failure messages.
func ListDir(dir string) string {
	var names []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && path != dir {
			rel, _ := filepath.Rel(dir, path)
			names = append(names, rel)
		}
		return nil
	})
	if len(names) == 0 {
		return "nothing"
	}
	if len(names) > 20 {
		names = append(names[:20], "...")
	}
	return strings.Join(names, ", ")
}

// DirUsage sums the sizes of the regular files under dir.
func DirUsage(dir string) (bytes int64, files int) {
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				bytes += info.Size()
				files++
			}
		}
		return nil
	})
	return bytes, files
}

// Shuffled returns a copy of s in a random order: targets run in a new
// random order each round, since a cyclic rotation would give each target
// the same predecessor every time, and the predecessor's writeback would
// then bias one target.
func Shuffled[T any](s []T) []T {
	out := append([]T(nil), s...)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
