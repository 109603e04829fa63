// Command upload benchmarks large multipart uploads into the reflex_upload
// Caddy module against two plain net/http baselines running in this process:
//
//   - raw:    io.Copy of the whole request body into a file (no parsing);
//   - stdlib: the single file part streamed to a file with mime/multipart.
//
// Caddy is started as a child process (one per configuration) from the
// binary given with -caddy. Every target writes into its own directory under
// one temp dir (same disk). The same client sends the same multipart body
// (generated on the fly, no disk reads) to each target, once per round, in a
// random order; the median throughput per target and its ratio to the raw
// baseline are printed, plus the peak memory growth of each Caddy child.
//
// Usage:
//
//	go build -o /tmp/caddy ./cmd/caddy
//	go run ./bench/upload -caddy /tmp/caddy [-size 1073741824] [-rounds 5]
//	go run ./bench/upload -only-baselines -size 67108864
//
// or simply: bash bench/run.sh [flags]
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	fileName  = "bench.bin"
	fieldName = "files"
	chunkSize = 4 << 20 // random buffer repeated to form the file content
	mib       = 1 << 20
)

// ---------------------------------------------------------------------------
// cleanup handling: everything registered here runs once, in reverse order,
// on normal exit, on failure and on SIGINT/SIGTERM.

var (
	cleanupMu   sync.Mutex
	cleanupFns  []func()
	cleanupOnce sync.Once
)

func atCleanup(f func()) {
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

// ---------------------------------------------------------------------------
// flags

type sizeFlag int64

func (s *sizeFlag) String() string { return strconv.FormatInt(int64(*s), 10) }

// Set accepts plain bytes (1073741824) or a binary suffix (64MiB, 1G, 512k).
func (s *sizeFlag) Set(v string) error {
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
	*s = sizeFlag(n * mult)
	return nil
}

type options struct {
	caddy         string
	size          int64
	rounds        int
	keepTmp       bool
	onlyBaselines bool
	timeout       time.Duration
}

// ---------------------------------------------------------------------------
// targets

type target struct {
	name    string
	url     string
	dir     string // where the uploaded file lands (dir/bench.bin)
	isCaddy bool
	proc    *caddyProc // nil for baselines
	poll    bool       // poll the upload's progress 10 times a second meanwhile
	// bytes the server must report and store: the file size, except for
	// raw, which stores the whole body (multipart framing included)
	expect int64

	secs    []float64 // seconds per run
	memGrow []int64   // bytes, caddy only
	cpu     []float64 // CPU seconds (user+system) the Caddy process spent per run, caddy only
}

// ---------------------------------------------------------------------------
// main

func main() {
	var o options
	size := sizeFlag(1 << 30)
	flag.StringVar(&o.caddy, "caddy", "", "path to the Caddy binary built with reflex_upload (required unless -only-baselines)")
	flag.Var(&size, "size", "bytes of file content per upload (e.g. 1073741824, 256MiB)")
	flag.IntVar(&o.rounds, "rounds", 5, "number of rounds (each round uploads once to every target)")
	flag.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temp dir (Caddyfiles, Caddy logs) for debugging")
	flag.BoolVar(&o.onlyBaselines, "only-baselines", false, "benchmark only the in-process raw and stdlib baselines (no Caddy)")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "timeout per upload")
	flag.Parse()
	o.size = int64(size)

	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %q\n", flag.Args())
		os.Exit(2)
	}
	if o.caddy == "" && !o.onlyBaselines {
		fmt.Fprintln(os.Stderr, "-caddy is required (or use -only-baselines)")
		flag.Usage()
		os.Exit(2)
	}
	if o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "-rounds must be >= 1")
		os.Exit(2)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\ngot %v, cleaning up\n", s)
		runCleanups()
		os.Exit(130)
	}()

	err := run(o)
	runCleanups()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nFAIL: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.caddy != "" {
		abs, err := filepath.Abs(o.caddy)
		if err != nil {
			return err
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() {
			return fmt.Errorf("-caddy %q: not a file (%v)", o.caddy, err)
		}
		o.caddy = abs
	}

	base, err := os.MkdirTemp("", "reflex-upload-bench-")
	if err != nil {
		return err
	}
	atCleanup(func() {
		if o.keepTmp {
			fmt.Printf("kept temp dir %s\n", base)
			return
		}
		os.RemoveAll(base)
	})

	fmt.Printf("reflex_upload benchmark: %s per upload (%d bytes), %d round(s), %s, %d CPU(s)\n",
		humanBytes(o.size), o.size, o.rounds, runtime.Version(), runtime.NumCPU())
	fmt.Printf("temp dir: %s\n", base)

	// The file content: a 4 MiB random buffer repeated.
	chunk := make([]byte, chunkSize)
	if _, err := rand.Read(chunk); err != nil {
		return err
	}
	body := newBodyTemplate(chunk, o.size)

	var targets []*target

	rawDir, err := mkdir(base, "raw")
	if err != nil {
		return err
	}
	rawURL, err := startBaseline(rawHandler(rawDir))
	if err != nil {
		return err
	}
	targets = append(targets, &target{name: "raw (io.Copy body to file)", url: rawURL, dir: rawDir, expect: body.contentLength()})

	stdDir, err := mkdir(base, "stdlib")
	if err != nil {
		return err
	}
	stdURL, err := startBaseline(stdlibHandler(stdDir))
	if err != nil {
		return err
	}
	targets = append(targets, &target{name: "stdlib mime/multipart", url: stdURL, dir: stdDir, expect: o.size})

	if !o.onlyBaselines {
		for _, c := range []struct {
			name, slug, extra string
		}{
			{"caddy fsync off, hash none", "caddy-fast", "\t\tfsync off\n\t\thash none\n"},
			{"caddy fsync off, hash sha256", "caddy-hash", "\t\tfsync off\n"},
			{"caddy defaults", "caddy-defaults", ""},
		} {
			dir, err := mkdir(base, c.slug)
			if err != nil {
				return err
			}
			p, err := startCaddy(o.caddy, base, c.slug, dir, c.extra)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			targets = append(targets, &target{
				name: c.name, url: "http://" + p.addr + "/_upload", dir: dir, isCaddy: true, proc: p, expect: o.size,
			})
			if c.slug == "caddy-fast" {
				// The same server, its progress polled 10 times a second during the upload.
				targets = append(targets, &target{
					name: c.name + ", polled", url: "http://" + p.addr + "/_upload", dir: dir, isCaddy: true, proc: p,
					expect: o.size, poll: true,
				})
			}
		}
	}
	for _, t := range targets {
		fmt.Printf("  %-28s %s -> %s\n", t.name, t.url, t.dir)
	}

	client := &http.Client{
		Timeout: o.timeout,
		Transport: &http.Transport{
			Proxy:              nil, // loopback only, never a proxy
			DisableCompression: true,
			DisableKeepAlives:  true, // fresh connection per run
			ForceAttemptHTTP2:  false,
			WriteBufferSize:    64 << 10,
			ReadBufferSize:     64 << 10,
			DialContext:        (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		},
	}

	var expectSHA string // computed lazily, only if a target reports a sha256
	n := len(targets)
	for r := 0; r < o.rounds; r++ {
		fmt.Printf("\nround %d/%d\n", r+1, o.rounds)
		// A new random order each round: a cyclic rotation would give each
		// target the same predecessor every time, and the predecessor's
		// writeback would then bias one target.
		order := mrand.Perm(n)
		for j := 0; j < n; j++ {
			t := targets[order[j]]
			if t.proc != nil {
				if err := t.proc.checkAlive(); err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
			}

			var memBefore int64
			var cpuBefore float64
			if t.proc != nil {
				memBefore, err = t.proc.beforeUpload()
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				cpuBefore = cpuSeconds(t.proc.pid())
			}

			secs, res, err := upload(client, t.url, body, t.poll)
			if err != nil {
				return fmt.Errorf("%s: %w%s%s", t.name, err, probe(client, t.url, chunk), logTail(t.proc))
			}

			memLine := ""
			if t.proc != nil {
				hwm, err := readStatusKB(t.proc.pid(), "VmHWM")
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				grow := hwm - memBefore
				t.memGrow = append(t.memGrow, grow)
				t.cpu = append(t.cpu, cpuSeconds(t.proc.pid())-cpuBefore)
				memLine = fmt.Sprintf("  peak mem growth %7.1f MiB", float64(grow)/mib)
			}

			// Validate the response.
			if res.size != t.expect {
				return fmt.Errorf("%s: server reports size %d, want %d (response: %.500s)", t.name, res.size, t.expect, res.raw)
			}
			if t.isCaddy && res.name != fileName {
				return fmt.Errorf("%s: server reports file name %q, want %q (response: %.500s)", t.name, res.name, fileName, res.raw)
			}
			if res.sha256 != "" {
				if expectSHA == "" {
					expectSHA = body.sha256()
				}
				if !strings.EqualFold(res.sha256, expectSHA) {
					return fmt.Errorf("%s: server reports sha256 %s, want %s", t.name, res.sha256, expectSHA)
				}
			}
			// Check and delete the stored file (outside the timed section).
			stored := filepath.Join(t.dir, fileName)
			st, err := os.Stat(stored)
			if err != nil {
				return fmt.Errorf("%s: stored file: %v (dir contains: %s)", t.name, err, listDir(t.dir))
			}
			if st.Size() != t.expect {
				return fmt.Errorf("%s: stored file %s has %d bytes, want %d", t.name, stored, st.Size(), t.expect)
			}
			if err := os.Remove(stored); err != nil {
				return fmt.Errorf("%s: removing stored file: %w", t.name, err)
			}
			syscall.Sync() // settle writeback before the next run (untimed)

			t.secs = append(t.secs, secs)
			fmt.Printf("  %-28s %8.3f s  %9.1f MiB/s%s\n", t.name, secs, mibps(o.size, secs), memLine)
		}
	}

	printSummary(o, targets)
	return nil
}

// ---------------------------------------------------------------------------
// client

// bodyTemplate describes one multipart/form-data body with a single file part.
type bodyTemplate struct {
	contentType string
	head, tail  []byte
	chunk       []byte
	size        int64
}

func newBodyTemplate(chunk []byte, size int64) *bodyTemplate {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="%s"; filename="%s"`, fieldName, fileName))
	h.Set("Content-Type", "application/octet-stream")
	if _, err := mw.CreatePart(h); err != nil {
		panic(err) // writes to a bytes.Buffer cannot fail
	}
	head := bytes.Clone(buf.Bytes())
	buf.Reset()
	if err := mw.Close(); err != nil {
		panic(err)
	}
	return &bodyTemplate{
		contentType: mw.FormDataContentType(),
		head:        head,
		tail:        bytes.Clone(buf.Bytes()),
		chunk:       chunk,
		size:        size,
	}
}

func (b *bodyTemplate) contentLength() int64 {
	return int64(len(b.head)) + b.size + int64(len(b.tail))
}

func (b *bodyTemplate) reader() io.Reader {
	return io.MultiReader(bytes.NewReader(b.head), &repeatReader{chunk: b.chunk, left: b.size}, bytes.NewReader(b.tail))
}

func (b *bodyTemplate) sha256() string {
	h := sha256.New()
	if _, err := io.Copy(h, &repeatReader{chunk: b.chunk, left: b.size}); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// repeatReader yields left bytes of chunk, repeated.
type repeatReader struct {
	chunk []byte
	off   int
	left  int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := copy(p, r.chunk[r.off:])
	r.off = (r.off + n) % len(r.chunk)
	r.left -= int64(n)
	return n, nil
}

type uploadResult struct {
	size   int64
	name   string
	sha256 string
	raw    string
}

// upload POSTs the body once and returns the seconds from request start to
// the complete response.
func upload(client *http.Client, url string, b *bodyTemplate, poll bool) (float64, uploadResult, error) {
	var res uploadResult
	req, err := http.NewRequest(http.MethodPost, url, b.reader())
	if err != nil {
		return 0, res, err
	}
	req.ContentLength = b.contentLength()
	req.Header.Set("Content-Type", b.contentType)
	var polls pollStats
	if poll {
		id := fmt.Sprintf("bench-%d", time.Now().UnixNano())
		req.Header.Set("X-Progress-ID", id)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			polls = pollProgress(pollClient, url+"/.uploads/"+id, stop)
		}()
		defer func() {
			close(stop)
			<-done
			fmt.Printf("  (progress polled %d times, %d of them uploading, %d failed)\n", polls.n, polls.uploading, polls.failed)
		}()
	}

	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, res, err
	}
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	secs := time.Since(start).Seconds()
	res.raw = strings.TrimSpace(string(respBody))
	if err != nil {
		return 0, res, fmt.Errorf("reading response: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return 0, res, fmt.Errorf("POST %s: HTTP %d, want 201; body: %.500s", url, resp.StatusCode, res.raw)
	}
	var parsed struct {
		Files []struct {
			Name   string `json:"name"`
			Size   *int64 `json:"size"`
			SHA256 string `json:"sha256"`
		} `json:"files"`
	}
	if err := json.Unmarshal(respBody, &parsed); err != nil {
		return 0, res, fmt.Errorf("POST %s: bad JSON response (%v): %.500s", url, err, res.raw)
	}
	if len(parsed.Files) == 0 || parsed.Files[0].Size == nil {
		return 0, res, fmt.Errorf("POST %s: response has no files[0].size: %.500s", url, res.raw)
	}
	f := parsed.Files[0]
	res.size, res.name, res.sha256 = *f.Size, f.Name, f.SHA256
	return secs, res, nil
}

// pollClient polls progress over one kept-alive connection, as a page would.
var pollClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableCompression: true}}

// pollStats counts the progress polls made during one upload.
type pollStats struct{ n, uploading, failed int }

// pollProgress GETs the progress URL 10 times a second until stop closes.
func pollProgress(client *http.Client, url string, stop <-chan struct{}) pollStats {
	var st pollStats
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return st
		case <-tick.C:
		}
		st.n++
		resp, err := client.Get(url)
		if err != nil {
			st.failed++
			continue
		}
		var p struct {
			State string `json:"state"`
		}
		err = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		switch {
		case err != nil || resp.StatusCode != http.StatusOK:
			st.failed++
		case p.State == "uploading":
			st.uploading++
		}
	}
}

// probe sends a tiny upload after a failed one, so that a transport error
// (e.g. the server answered early and reset the connection) can be reported
// together with what the server actually answers.
func probe(client *http.Client, url string, chunk []byte) string {
	_, res, err := upload(client, url, newBodyTemplate(chunk, 1024), false)
	if err != nil {
		return "\n(a 1 KiB probe upload also fails: " + err.Error() + ")"
	}
	return "\n(a 1 KiB probe upload succeeds: " + res.raw + ")"
}

// ---------------------------------------------------------------------------
// baseline servers (in this process)

func startBaseline(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	atCleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/_upload", nil
}

func writeResult(w http.ResponseWriter, n int64) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"files":[{"name":%q,"size":%d}]}`+"\n", fileName, n)
}

// rawHandler copies the whole request body into dir/bench.bin.
func rawHandler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Create(filepath.Join(dir, fileName))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n, err := io.Copy(f, r.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeResult(w, n) // the whole body, multipart framing included
	})
}

// stdlibHandler streams the single file part into dir/bench.bin with
// mime/multipart (no ParseMultipartForm).
func stdlibHandler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var written int64 = -1
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if part.FormName() != fieldName || part.FileName() == "" || written >= 0 {
				part.Close()
				continue
			}
			f, err := os.Create(filepath.Join(dir, fileName))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			written, err = io.Copy(f, part)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		if written < 0 {
			http.Error(w, "no file part", http.StatusBadRequest)
			return
		}
		writeResult(w, written)
	})
}

// ---------------------------------------------------------------------------
// Caddy child processes

type caddyProc struct {
	cmd     *exec.Cmd
	addr    string
	logPath string
	exited  chan struct{}
	waitErr error

	clearRefsOK  bool
	rssAtStartKB int64
	warnedOnce   bool
}

func (p *caddyProc) pid() int { return p.cmd.Process.Pid }

func startCaddy(bin, base, slug, root, extra string) (*caddyProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	cfgDir, err := mkdir(base, slug+"-config")
	if err != nil {
		return nil, err
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}

http://127.0.0.1:%s {
	reflex_upload {
		root %s
%s	}
}
`, port, caddyfileToken(root), extra)
	cfgPath := filepath.Join(cfgDir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(caddyfile), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(cfgDir, "caddy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}

	cmd := exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = cfgDir
	// Keep Caddy's data/config storage inside the temp dir.
	cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(cfgDir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(cfgDir, "config"),
	)
	// If this process dies without cleaning up, the kernel kills Caddy.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &caddyProc{cmd: cmd, addr: addr, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	atCleanup(p.stop)

	// Wait until the port accepts connections.
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("caddy exited during startup: %v%s", p.waitErr, logTail(p))
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("caddy did not listen on %s within 30s%s", addr, logTail(p))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Memory accounting: can VmHWM be reset?
	if rss, err := readStatusKB(p.pid(), "VmRSS"); err == nil {
		p.rssAtStartKB = rss
	} else {
		return nil, err
	}
	p.clearRefsOK = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.pid()), []byte("5"), 0) == nil
	fmt.Printf("  started caddy pid %d on %s (%s), RSS %.1f MiB\n", p.pid(), addr, slug, float64(p.rssAtStartKB)/mib)
	return p, nil
}

// beforeUpload resets VmHWM (if possible) and returns the baseline (bytes)
// against which VmHWM after the upload is compared.
func (p *caddyProc) beforeUpload() (int64, error) {
	path := fmt.Sprintf("/proc/%d/clear_refs", p.pid())
	if p.clearRefsOK {
		if err := os.WriteFile(path, []byte("5"), 0); err != nil {
			p.clearRefsOK = false
			fmt.Printf("  NOTE: cannot write %s (%v); reporting VmHWM - VmRSS-at-start instead\n", path, err)
		}
	} else if !p.warnedOnce {
		fmt.Printf("  NOTE: cannot write %s; reporting VmHWM - VmRSS-at-start instead\n", path)
	}
	p.warnedOnce = true
	if !p.clearRefsOK {
		return p.rssAtStartKB, nil
	}
	return readStatusKB(p.pid(), "VmRSS")
}

func (p *caddyProc) checkAlive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("caddy (pid %d) exited: %v%s", p.pid(), p.waitErr, logTail(p))
	default:
		return nil
	}
}

func (p *caddyProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func logTail(p *caddyProc) string {
	if p == nil {
		return ""
	}
	data, err := os.ReadFile(p.logPath)
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "\n--- caddy log (" + p.logPath + ", last lines) ---\n" + strings.Join(lines, "\n")
}

// readStatusKB returns a "VmXXX:  1234 kB" field of /proc/PID/status in bytes.
func readStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) < 1 {
			break
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s in /proc/%d/status: %w", field, pid, err)
		}
		return n << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

func caddyfileToken(s string) string {
	if strings.ContainsAny(s, " \t\n\"{}#`") {
		return "`" + s + "`"
	}
	return s
}

// ---------------------------------------------------------------------------
// output

func printSummary(o options, targets []*target) {
	raw := median(targets[0].secs)
	rawMiBps := mibps(o.size, raw)

	fmt.Printf("\nper-target results (%d run(s) each, %s per upload):\n", o.rounds, humanBytes(o.size))
	for _, t := range targets {
		s := append([]float64(nil), t.secs...)
		sort.Float64s(s)
		fmt.Printf("  %-28s median %8.1f MiB/s  min %8.1f  max %8.1f  (times: %s)\n",
			t.name, mibps(o.size, median(s)), mibps(o.size, s[len(s)-1]), mibps(o.size, s[0]), fmtSecs(t.secs))
		if t.isCaddy {
			kind := "VmHWM - VmRSS before upload (VmHWM reset via clear_refs)"
			if !t.proc.clearRefsOK {
				kind = "VmHWM - VmRSS at start (clear_refs not writable)"
			}
			fmt.Printf("  %-28s peak mem growth max %.1f MiB over %d upload(s) [%s]\n",
				"", float64(maxInt64(t.memGrow))/mib, len(t.memGrow), kind)
		}
	}

	fmt.Printf("\n%-30s %12s %14s %17s %19s\n", "target", "median MiB/s", "ratio vs raw", "min..max MiB/s", "peak mem growth")
	for _, t := range targets {
		med := mibps(o.size, median(t.secs))
		lo, hi := minMax(t.secs, o.size)
		mem := "-"
		if t.isCaddy {
			mem = fmt.Sprintf("%.1f MiB", float64(maxInt64(t.memGrow))/mib)
		}
		fmt.Printf("%-30s %12.1f %14.2f %17s %19s\n", t.name, med, med/rawMiBps,
			fmt.Sprintf("%.0f..%.0f", lo, hi), mem)
	}

	// The cost of polling, paired by round: each round uploads to the same
	// server with and without polling, so their ratio cancels most of the
	// machine's drift from round to round.
	for i, t := range targets {
		if !t.poll || i == 0 || targets[i-1].proc != t.proc {
			continue
		}
		base := targets[i-1]
		ratios := make([]float64, 0, len(t.secs))
		for r := range min(len(t.secs), len(base.secs)) {
			ratios = append(ratios, base.secs[r]/t.secs[r])
		}
		fmt.Printf("\npolled / unpolled throughput, paired by round: median %.3f (rounds: %s)\n",
			median(ratios), fmtRatios(ratios))
		// Wall time on a shared 2-core box with the client beside the server
		// is noisy; the CPU the server spends is the steadier measure of
		// what polling costs it.
		fmt.Printf("Caddy CPU seconds per upload: unpolled median %.3f, polled median %.3f (ratio %.3f)\n",
			median(base.cpu), median(t.cpu), median(t.cpu)/median(base.cpu))
	}
}

// cpuSeconds reads a process's user+system CPU time from /proc (0 when it
// cannot).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTicks = 100

func fmtRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}

func minMax(secs []float64, size int64) (lo, hi float64) {
	s := append([]float64(nil), secs...)
	sort.Float64s(s)
	return mibps(size, s[len(s)-1]), mibps(size, s[0])
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func maxInt64(v []int64) int64 {
	var m int64
	for i, x := range v {
		if i == 0 || x > m {
			m = x
		}
	}
	return m
}

func mibps(size int64, secs float64) float64 { return float64(size) / mib / secs }

func fmtSecs(v []float64) string {
	parts := make([]string, len(v))
	for i, s := range v {
		parts[i] = strconv.FormatFloat(s, 'f', 3, 64)
	}
	return strings.Join(parts, " ")
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

func mkdir(base, name string) (string, error) {
	d := filepath.Join(base, name)
	return d, os.Mkdir(d, 0o755)
}

func listDir(dir string) string {
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
