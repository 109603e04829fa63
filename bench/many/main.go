// Command many holds N slow uploads open at once against Caddy with the
// reflex_upload module (multipart and tus) and, with the same client in the
// same run, against tusd v2 (filestore), and prints what each server costs
// per upload: uploads completed and failed, the peak growth of its resident
// memory (sampled from /proc every 200 ms) per upload, its CPU seconds, and
// its resident memory some time after the burst.
//
// Every server is a fresh child process per measurement (tusd is this
// binary re-executed with a hidden -serve-tusd flag). The client is cheap
// per connection, so that it is not what breaks at 10,000: one goroutine
// per upload on a raw net.Conn, HTTP/1.1 written by hand, the body paced
// in -pieces writes spread over -duration from one shared read-only
// buffer, and a 512-byte reader for the answer.
//
// Usage:
//
//	bash bench/many/run.sh                        # N = 100, 500, 1000
//	bash bench/many/run.sh -n 10000 -after 30s   # the big one
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
)

const (
	tusdBasePath = "/files/"
	caddyTusPath = "/_upload/.uploads"
	caddyPath    = "/_upload"
	boundary     = "----ManyBenchBoundary7MA4YWxkTrZu0gW"
)

// target is one server and protocol.
type target struct {
	name string
	kind string // "caddy" or "tusd"
	tus  bool
	path string // multipart POST path, or tus creation path
}

var allTargets = []target{
	{"caddy multipart", "caddy", false, caddyPath},
	{"caddy tus", "caddy", true, caddyTusPath},
	{"tusd tus", "tusd", true, tusdBasePath},
}

type options struct {
	caddy    string
	ns       []int
	size     int
	duration time.Duration
	pieces   int
	ramp     time.Duration
	after    time.Duration
	rounds   int
	targets  []target
	keepTmp  bool
	timeout  time.Duration
	pprofDir string
}

// result is one measurement.
type result struct {
	t              target
	n              int
	done, failed   int
	firstErr       string
	baseRSS        int64
	peakGrowth     int64
	cpu            float64 // seconds, from the start of the burst to its end
	rssAfter       int64
	burst          time.Duration
	fdPeak, fdBase int
	mem            memDelta // Go's own accounting, mid-burst minus before
}

// memStats is the part of runtime.MemStats the servers publish (expvar).
type memStats struct {
	HeapInuse, StackInuse, MSpanInuse, HeapObjects, Sys uint64
}

type memDelta struct{ heap, stack, spans, objects, sys int64 }

func readMemStats(url string) (memStats, error) {
	resp, err := http.Get(url)
	if err != nil {
		return memStats{}, err
	}
	defer resp.Body.Close()
	var v struct{ Memstats memStats }
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v.Memstats, err
}

func main() {
	if len(os.Args) > 1 && strings.TrimLeft(os.Args[1], "-") == "serve-tusd" {
		if err := serveTusd(os.Args[2], os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, "serve-tusd:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	var ns, targets string
	var size int
	flag.StringVar(&o.caddy, "caddy", "", "Caddy binary built with reflex_upload (required)")
	flag.StringVar(&ns, "n", "100,500,1000", "numbers of uploads held open at once, comma-separated")
	flag.IntVar(&size, "size", 1<<20, "bytes per upload")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "time over which each client paces its body")
	flag.IntVar(&o.pieces, "pieces", 64, "writes per body (spread evenly over -duration)")
	flag.DurationVar(&o.ramp, "ramp", 2*time.Second, "clients start spread over this time")
	flag.DurationVar(&o.after, "after", 30*time.Second, "when to read the resident memory after the burst")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds (targets in a random order each round)")
	flag.StringVar(&targets, "targets", "caddy multipart,caddy tus,tusd tus", "targets, comma-separated")
	flag.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temp dir (configs, logs)")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "time limit of one burst")
	flag.StringVar(&o.pprofDir, "pprof-dir", "", "save Caddy's heap profile and goroutine dump, mid-burst, into this dir")
	flag.Parse()
	o.size = size
	for _, s := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatal(fmt.Errorf("-n: bad number %q", s))
		}
		o.ns = append(o.ns, n)
	}
	for _, s := range strings.Split(targets, ",") {
		found := false
		for _, t := range allTargets {
			if t.name == strings.TrimSpace(s) {
				o.targets, found = append(o.targets, t), true
			}
		}
		if !found {
			fatal(fmt.Errorf("-targets: unknown %q", s))
		}
	}
	if o.caddy == "" {
		for _, t := range o.targets {
			if t.kind == "caddy" {
				fatal(errors.New("-caddy is required"))
			}
		}
	}
	if o.caddy != "" {
		abs, err := filepath.Abs(o.caddy)
		if err != nil {
			fatal(err)
		}
		o.caddy = abs
	}
	if err := run(o); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	runCleanups()
	fmt.Fprintln(os.Stderr, "FAIL:", err)
	os.Exit(1)
}

var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func atCleanup(f func()) { cleanupMu.Lock(); cleanups = append(cleanups, f); cleanupMu.Unlock() }

func runCleanups() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// raiseFileLimit raises the open-files limit as far as the kernel allows
// (children inherit it) and returns it.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	max := uint64(1 << 20)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			max = v
		}
	}
	for try := max; try > lim.Cur; try /= 2 {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: try, Max: try}) == nil {
			break
		}
	}
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

func run(o options) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; runCleanups(); os.Exit(130) }()

	limit := raiseFileLimit()
	ports, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	somax, _ := os.ReadFile("/proc/sys/net/core/somaxconn")
	fmt.Printf("open-files limit (ulimit -n, this process and the servers): %d\n", limit)
	fmt.Printf("ephemeral ports: %s; somaxconn: %s\n", strings.Join(strings.Fields(string(ports)), "-"), strings.TrimSpace(string(somax)))
	fmt.Printf("each upload: %d bytes in %d writes over %v; clients start over %v; RSS sampled every 200 ms; RSS read again %v after the burst\n\n",
		o.size, o.pieces, o.duration, o.ramp, o.after)
	for _, n := range o.ns {
		if need := uint64(2*n + 100); need > limit {
			fmt.Printf("NOTE: a server that keeps each upload's file open needs about %d descriptors for %d uploads (sockets and files); the limit is %d\n", need, n, limit)
		}
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	base, err := os.MkdirTemp("", "reflex-many-bench-")
	if err != nil {
		return err
	}
	atCleanup(func() {
		if o.keepTmp {
			fmt.Println("kept", base)
			return
		}
		os.RemoveAll(base)
	})
	data := make([]byte, o.size)
	rand.Read(data)

	var results []*result
	seq := 0
	for round := 1; round <= o.rounds; round++ {
		for _, n := range o.ns {
			order := append([]target(nil), o.targets...)
			mrand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			names := make([]string, len(order))
			for i, t := range order {
				names[i] = t.name
			}
			fmt.Printf("round %d/%d, %d at once, order: %s\n", round, o.rounds, n, strings.Join(names, ", "))
			for _, t := range order {
				seq++
				r, err := measure(o, self, base, seq, t, n, data)
				if err != nil {
					return fmt.Errorf("%s, %d at once: %w", t.name, n, err)
				}
				results = append(results, r)
				fmt.Printf("  %-16s %5d done %5d failed  peak +%7.1f MiB (%6.1f KiB each)  CPU %6.1f s  RSS %v after: %6.1f MiB (base %5.1f)  burst %v  fds %d->%d%s\n",
					t.name, r.done, r.failed, mib(r.peakGrowth), kib(r.peakGrowth)/float64(n), r.cpu, o.after, mib(r.rssAfter), mib(r.baseRSS),
					r.burst.Round(100*time.Millisecond), r.fdBase, r.fdPeak, errNote(r))
				if m := r.mem; m.sys != 0 {
					fmt.Printf("  %-16s mid-burst, per upload: heap in use %.1f KiB (%.0f objects), stacks %.1f KiB, spans %.1f KiB, Go's Sys %.1f KiB\n",
						"", kib(m.heap)/float64(n), float64(m.objects)/float64(n), kib(m.stack)/float64(n), kib(m.spans)/float64(n), kib(m.sys)/float64(n))
				}
			}
		}
	}
	printSummary(o, results)
	return nil
}

func errNote(r *result) string {
	if r.firstErr == "" {
		return ""
	}
	return "  first error: " + r.firstErr
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
func kib(b int64) float64 { return float64(b) / (1 << 10) }

// printSummary prints per target and N the medians over rounds.
func printSummary(o options, results []*result) {
	fmt.Printf("\nsummary (median over %d round(s)); peak growth is the highest RSS during the burst minus the RSS before it\n", o.rounds)
	fmt.Printf("%-16s %7s %7s %7s %12s %12s %9s %14s\n", "target", "at once", "done", "failed", "peak growth", "per upload", "CPU s", "RSS after")
	for _, n := range o.ns {
		for _, t := range o.targets {
			var growth, after []float64
			var cpu []float64
			done, failed := 0, 0
			for _, r := range results {
				if r.t.name == t.name && r.n == n {
					growth = append(growth, float64(r.peakGrowth))
					after = append(after, float64(r.rssAfter))
					cpu = append(cpu, r.cpu)
					done += r.done
					failed += r.failed
				}
			}
			if len(growth) == 0 {
				continue
			}
			g := median(growth)
			fmt.Printf("%-16s %7d %7d %7d %8.1f MiB %8.1f KiB %9.1f %10.1f MiB\n",
				t.name, n, done, failed, g/(1<<20), g/1024/float64(n), median(cpu), median(after)/(1<<20))
		}
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// measure starts a fresh server, runs one burst of n uploads against it
// and stops it.
func measure(o options, self, base string, seq int, t target, n int, data []byte) (*result, error) {
	dir := filepath.Join(base, fmt.Sprintf("%d-%s", seq, strings.ReplaceAll(t.name, " ", "-")))
	store := filepath.Join(dir, "store")
	if err := os.MkdirAll(store, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(store)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var srv *child
	varsURL := "http://" + addr + "/debug/vars"
	switch t.kind {
	case "caddy":
		_, port, _ := net.SplitHostPort(addr)
		admin, err := freeAddr()
		if err != nil {
			return nil, err
		}
		varsURL = "http://" + admin + "/debug/vars"
		cfg := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n\tpersist_config off\n}\n\nhttp://127.0.0.1:%s {\n\treflex_upload {\n\t\troot %q\n\t\tfsync off\n\t}\n}\n", admin, port, store)
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		env := []string{"XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
		srv, err = startChild(dir, o.caddy, []string{"run", "--config", path, "--adapter", "caddyfile"}, env, addr)
	default:
		srv, err = startChild(dir, self, []string{"-serve-tusd", store, addr}, nil, addr)
	}
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	time.Sleep(time.Second) // let it settle

	res := &result{t: t, n: n}
	res.baseRSS, _ = statusBytes(srv.pid(), "VmRSS")
	res.fdBase = countFDs(srv.pid())
	cpu0 := cpuSeconds(srv.pid())
	ms0, _ := readMemStats(varsURL)
	midway := make(chan memStats, 1)
	go func() {
		// Go's own accounting of the server once every upload is under way.
		time.Sleep(o.ramp + o.duration/2)
		ms, err := readMemStats(varsURL)
		if err != nil {
			ms = memStats{}
		}
		midway <- ms
		if o.pprofDir != "" && t.kind == "caddy" {
			base := strings.TrimSuffix(varsURL, "/vars") + "/pprof/"
			for file, q := range map[string]string{"heap": "heap", "goroutines.txt": "goroutine?debug=1"} {
				if resp, err := http.Get(base + q); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					os.WriteFile(filepath.Join(o.pprofDir, fmt.Sprintf("%s-%d-%s", strings.ReplaceAll(t.name, " ", "-"), n, file)), b, 0o644)
				}
			}
		}
	}()

	// Sample the RSS every 200 ms.
	var peak atomic.Int64
	var fdPeak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			if rss, err := statusBytes(srv.pid(), "VmRSS"); err == nil && rss > peak.Load() {
				peak.Store(rss)
			}
			if i%5 == 0 { // counting descriptors costs more: once a second
				if fds := int64(countFDs(srv.pid())); fds > fdPeak.Load() {
					fdPeak.Store(fds)
				}
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	var done, failed atomic.Int64
	var errMu sync.Mutex
	deadline := start.Add(o.ramp + o.duration + o.timeout)
	for i := range n {
		wg.Go(func() {
			if o.ramp > 0 {
				time.Sleep(time.Duration(int64(o.ramp) * int64(i) / int64(n)))
			}
			err := upload(addr, t, i, data, o, deadline)
			if err != nil {
				failed.Add(1)
				errMu.Lock()
				if res.firstErr == "" {
					res.firstErr = err.Error()
				}
				errMu.Unlock()
				return
			}
			done.Add(1)
		})
	}
	wg.Wait()
	res.burst = time.Since(start)
	res.cpu = cpuSeconds(srv.pid()) - cpu0
	close(stopSampling)
	<-sampled
	res.done, res.failed = int(done.Load()), int(failed.Load())
	res.peakGrowth = peak.Load() - res.baseRSS
	res.fdPeak = int(fdPeak.Load())
	if ms := <-midway; ms.Sys > 0 && ms0.Sys > 0 {
		res.mem = memDelta{
			heap: int64(ms.HeapInuse) - int64(ms0.HeapInuse), stack: int64(ms.StackInuse) - int64(ms0.StackInuse),
			spans: int64(ms.MSpanInuse) - int64(ms0.MSpanInuse), objects: int64(ms.HeapObjects) - int64(ms0.HeapObjects),
			sys: int64(ms.Sys) - int64(ms0.Sys),
		}
	}
	if err := srv.alive(); err != nil {
		return nil, err
	}
	time.Sleep(o.after)
	res.rssAfter, _ = statusBytes(srv.pid(), "VmRSS")
	return res, nil
}

// upload sends one paced upload on its own connection and checks the answer.
func upload(addr string, t target, i int, data []byte, o options, deadline time.Time) error {
	conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	br := bufio.NewReaderSize(conn, 512)
	name := fmt.Sprintf("u%06d.bin", i)

	if !t.tus {
		head := fmt.Sprintf("--%s\r\nContent-Disposition: form-data; name=\"files\"; filename=%q\r\nContent-Type: application/octet-stream\r\n\r\n", boundary, name)
		tail := "\r\n--" + boundary + "--\r\n"
		length := len(head) + len(data) + len(tail)
		req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s",
			t.path, addr, boundary, length, head)
		if _, err := io.WriteString(conn, req); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if err := paced(conn, data, o); err != nil {
			return err
		}
		if _, err := io.WriteString(conn, tail); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return expect(br, http.StatusCreated, "")
	}

	md := "filename " + base64.StdEncoding.EncodeToString([]byte(name))
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Length: %d\r\nUpload-Metadata: %s\r\nContent-Length: 0\r\n\r\n",
		t.path, addr, len(data), md)
	if _, err := io.WriteString(conn, req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("creation: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusCreated || loc == "" {
		return fmt.Errorf("creation: %s, Location %q", resp.Status, loc)
	}
	if j := strings.Index(loc, "://"); j >= 0 { // absolute: keep the path
		loc = loc[j+3:]
		loc = loc[strings.IndexByte(loc, '/'):]
	}
	req = fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n",
		loc, addr, len(data))
	if _, err := io.WriteString(conn, req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := paced(conn, data, o); err != nil {
		return err
	}
	return expect(br, http.StatusNoContent, strconv.Itoa(len(data)))
}

// paced writes data in o.pieces writes spread evenly over o.duration.
func paced(conn net.Conn, data []byte, o options) error {
	start := time.Now()
	for k := 0; k < o.pieces; k++ {
		lo, hi := len(data)*k/o.pieces, len(data)*(k+1)/o.pieces
		if _, err := conn.Write(data[lo:hi]); err != nil {
			return fmt.Errorf("write at %d: %w", lo, err)
		}
		if k+1 < o.pieces {
			time.Sleep(time.Until(start.Add(o.duration * time.Duration(k+1) / time.Duration(o.pieces))))
		}
	}
	return nil
}

// expect reads an answer and checks its status (and Upload-Offset).
func expect(br *bufio.Reader, status int, offset string) error {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != status {
		return fmt.Errorf("answer %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	if offset != "" && resp.Header.Get("Upload-Offset") != offset {
		return fmt.Errorf("Upload-Offset %q, want %s", resp.Header.Get("Upload-Offset"), offset)
	}
	return nil
}

// serveTusd serves tusd v2 (filestore, memorylocker) into dir on addr.
func serveTusd(dir, addr string) error {
	store := filestore.New(dir)
	composer := tusd.NewStoreComposer()
	store.UseIn(composer)
	memorylocker.New().UseIn(composer)
	h, err := tusd.NewHandler(tusd.Config{BasePath: tusdBasePath, StoreComposer: composer})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(tusdBasePath, http.StripPrefix(tusdBasePath, h))
	mux.Handle(strings.TrimSuffix(tusdBasePath, "/"), http.StripPrefix(strings.TrimSuffix(tusdBasePath, "/"), h))
	mux.Handle("/debug/vars", expvar.Handler())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

// child is a server process.
type child struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error
}

func startChild(dir, bin string, args, env []string, addr string) (*child, error) {
	logPath := filepath.Join(dir, "server.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = lf, lf, dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	c := &child{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { c.err = cmd.Wait(); lf.Close(); close(c.exited) }()
	atCleanup(c.stop)
	for end := time.Now().Add(60 * time.Second); ; {
		if err := c.alive(); err != nil {
			return nil, err
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return c, nil
		}
		if time.Now().After(end) {
			return nil, fmt.Errorf("%s does not listen on %s%s", bin, addr, c.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("server exited: %v%s", c.err, c.tail())
	default:
		return nil
	}
}

func (c *child) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

func (c *child) tail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\n--- server log (end) ---\n" + string(b)
}

// statusBytes reads a "VmXXX: N kB" field of /proc/PID/status.
func statusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == field {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, err := strconv.ParseInt(f[0], 10, 64)
				return n << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no %s", field)
}

// cpuSeconds is the user plus system time of a process (and its waited-for
// children), from /proc/PID/stat.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is f[0]; utime is field 14 of the
	// whole line, so f[11]; stime f[12].
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func countFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(ents)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
