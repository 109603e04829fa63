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
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/bench/internal/kit"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

const (
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
	{"tusd tus", "tusd", true, kit.TusdBasePath},
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
	kit.ServeTusdChild()
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
			kit.Usage(fmt.Sprintf("-n: bad number %q", s))
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
			kit.Usage(fmt.Sprintf("-targets: unknown %q", s))
		}
	}
	if o.caddy == "" {
		for _, t := range o.targets {
			if t.kind == "caddy" {
				kit.Usage("-caddy is required")
			}
		}
	}
	kit.Main(func() error {
		if o.caddy != "" {
			abs, err := kit.AbsFile("-caddy", o.caddy)
			if err != nil {
				return err
			}
			o.caddy = abs
		}
		return run(o)
	})
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

	self, err := kit.Self()
	if err != nil {
		return err
	}
	base, err := kit.TempDir("reflex-many-bench-", o.keepTmp)
	if err != nil {
		return err
	}
	data := make([]byte, o.size)
	rand.Read(data)

	var results []*result
	seq := 0
	for round := 1; round <= o.rounds; round++ {
		for _, n := range o.ns {
			order := kit.Shuffled(o.targets)
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
			g := kit.Median(growth)
			fmt.Printf("%-16s %7d %7d %7d %8.1f MiB %8.1f KiB %9.1f %10.1f MiB\n",
				t.name, n, done, failed, g/(1<<20), g/1024/float64(n), kit.Median(cpu), kit.Median(after)/(1<<20))
		}
	}
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
	addr, err := supervisor.FreeAddr()
	if err != nil {
		return nil, err
	}
	var cfg supervisor.Config
	varsURL := "http://" + addr + "/debug/vars"
	switch t.kind {
	case "caddy":
		admin, err := supervisor.FreeAddr()
		if err != nil {
			return nil, err
		}
		varsURL = "http://" + admin + "/debug/vars"
		cfg, err = kit.CaddyConfig("caddy", o.caddy, dir, addr, store, []string{"admin " + admin}, []string{"fsync off"})
		if err != nil {
			return nil, err
		}
	default:
		cfg = kit.TusdConfig(self, store, dir, addr)
	}
	srv, err := kit.StartServer(cfg, addr, 60*time.Second)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	time.Sleep(time.Second) // let it settle

	res := &result{t: t, n: n}
	res.baseRSS, _ = srv.RSS()
	res.fdBase = srv.FDs()
	cpu0 := srv.CPUSeconds()
	ms0, _ := readMemStats(varsURL)
	// With -pprof-dir: Caddy's heap (after a collection) before the burst
	// and mid-burst, so that a profile's difference is what the uploads
	// hold (run Caddy with GODEBUG=memprofilerate=1 to see every object),
	// and its goroutines mid-burst.
	pprofSave := func(files map[string]string) {
		if o.pprofDir == "" || t.kind != "caddy" {
			return
		}
		base := strings.TrimSuffix(varsURL, "/vars") + "/pprof/"
		for file, q := range files {
			if resp, err := http.Get(base + q); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				os.WriteFile(filepath.Join(o.pprofDir, fmt.Sprintf("%s-%d-%s", strings.ReplaceAll(t.name, " ", "-"), n, file)), b, 0o644)
			}
		}
	}
	pprofSave(map[string]string{"heap-before": "heap?gc=1"})
	midway := make(chan memStats, 1)
	go func() {
		// Go's own accounting of the server once every upload is under way.
		time.Sleep(o.ramp + o.duration/2)
		ms, err := readMemStats(varsURL)
		if err != nil {
			ms = memStats{}
		}
		midway <- ms
		pprofSave(map[string]string{"heap": "heap?gc=1", "goroutines.txt": "goroutine?debug=1"})
	}()

	// Sample the RSS every 200 ms, the descriptors once a second.
	peaks := srv.SamplePeaks(200*time.Millisecond, 5)

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
	res.cpu = srv.CPUSeconds() - cpu0
	peak, fdPeak := peaks()
	res.done, res.failed = int(done.Load()), int(failed.Load())
	res.peakGrowth = peak - res.baseRSS
	res.fdPeak = fdPeak
	if ms := <-midway; ms.Sys > 0 && ms0.Sys > 0 {
		res.mem = memDelta{
			heap: int64(ms.HeapInuse) - int64(ms0.HeapInuse), stack: int64(ms.StackInuse) - int64(ms0.StackInuse),
			spans: int64(ms.MSpanInuse) - int64(ms0.MSpanInuse), objects: int64(ms.HeapObjects) - int64(ms0.HeapObjects),
			sys: int64(ms.Sys) - int64(ms0.Sys),
		}
	}
	if err := srv.Alive(); err != nil {
		return nil, err
	}
	time.Sleep(o.after)
	res.rssAfter, _ = srv.RSS()
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
