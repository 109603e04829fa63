// Command tus benchmarks a large tus 1.0 upload into the reflex_upload Caddy
// module against two other servers, with the same client, in the same run:
//
//   - raw:   a plain net/http tus server that io.Copy's each PATCH body
//     into the file (no tus bookkeeping beyond the offset check): the limit
//     for these bytes on this machine (loopback + disk);
//   - tusd:  tusd v2 (pkg/handler + pkg/filestore + pkg/memorylocker, as in
//     tusd's own example server), base path /files/;
//   - caddy: the real Caddy binary (-caddy) with
//     reflex_upload { root DIR; fsync off }, tus endpoint /_upload/.uploads.
//
// Every server is a child process (raw and tusd re-exec this binary with a
// hidden -serve-raw / -serve-tusd flag), so the peak memory growth of each one
// can be read from /proc/PID/status. Every server writes into its own
// directory under one temp dir (same disk).
//
// The client is a minimal tus 1.0 client (creation + core): POST with
// Upload-Length and Upload-Metadata, then either one PATCH with the whole
// body or sequential PATCHes of -patch-size bytes. The content is generated
// on the fly from a 4 MiB random buffer (no client disk reads, known
// Content-Length). Each round uploads once per (server, mode) in a random
// order; per row the median MiB/s, its ratio to raw's median in the same
// mode, min..max and the peak memory growth are printed.
//
// Usage:
//
//	bash bench/tus/run.sh [-size 1073741824] [-rounds 5]
//	cd bench/tus && go build -o /tmp/tusbench . && /tmp/tusbench -caddy /tmp/caddy
//	/tmp/tusbench -only-baselines -size 67108864 -rounds 1
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
)

const (
	fileName     = "bench.bin"
	chunkSize    = 4 << 20 // random buffer repeated to form the file content
	mib          = 1 << 20
	tusVersion   = "1.0.0"
	tusdBasePath = "/files/"
	rawBasePath  = "/raw/"
	caddyTusPath = "/_upload/.uploads"
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
	patchSize     int64
	rounds        int
	keepTmp       bool
	onlyBaselines bool
	timeout       time.Duration
}

// ---------------------------------------------------------------------------
// servers and rows

type serverKind int

const (
	kindRaw serverKind = iota
	kindTusd
	kindCaddy
)

// server is one child process serving tus uploads into dir.
type server struct {
	name     string
	kind     serverKind
	endpoint string // creation URL
	dir      string // where uploads land
	proc     *childProc
	leftWarn bool
}

// row is one (server, client mode) combination: one line of the summary.
type row struct {
	srv       *server
	mode      string
	patchSize int64 // 0: the whole body in one PATCH

	secs    []float64 // seconds per upload
	patches int       // PATCH requests per upload
	memGrow []int64   // bytes
}

func (r *row) name() string { return r.srv.name + ", " + r.mode }

// ---------------------------------------------------------------------------
// main

func main() {
	// Hidden child modes: serve raw / tusd (re-exec of this binary).
	if len(os.Args) > 1 {
		switch strings.TrimLeft(os.Args[1], "-") {
		case "serve-raw", "serve-tusd":
			if err := childMain(os.Args[1:]); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}

	var o options
	size := sizeFlag(1 << 30)
	patch := sizeFlag(16 << 20)
	flag.StringVar(&o.caddy, "caddy", "", "path to the Caddy binary built with reflex_upload (required unless -only-baselines)")
	flag.Var(&size, "size", "bytes per upload (e.g. 1073741824, 256MiB)")
	flag.Var(&patch, "patch-size", "bytes per PATCH in the chunked mode (e.g. 16MiB)")
	flag.IntVar(&o.rounds, "rounds", 5, "number of rounds (each round uploads once per server and mode)")
	flag.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temp dir (Caddyfile, server logs) for debugging")
	flag.BoolVar(&o.onlyBaselines, "only-baselines", false, "benchmark only raw and tusd (no Caddy)")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "timeout per upload")
	flag.Parse()
	o.size, o.patchSize = int64(size), int64(patch)

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
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
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
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("locating this binary for re-exec: %w", err)
	}

	base, err := os.MkdirTemp("", "reflex-tus-bench-")
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

	fmt.Printf("tus benchmark: %s per upload (%d bytes), PATCHes of %s in the chunked mode, %d round(s), %s, %d CPU(s)\n",
		humanBytes(o.size), o.size, humanBytes(o.patchSize), o.rounds, runtime.Version(), runtime.NumCPU())
	fmt.Printf("temp dir: %s\n", base)

	// The file content: a 4 MiB random buffer repeated.
	chunk := make([]byte, chunkSize)
	if _, err := rand.Read(chunk); err != nil {
		return err
	}

	var servers []*server

	// raw and tusd: this binary, re-executed.
	for _, s := range []struct {
		name, slug, flag, basePath string
		kind                       serverKind
	}{
		{"raw", "raw", "-serve-raw", rawBasePath, kindRaw},
		{"tusd", "tusd", "-serve-tusd", tusdBasePath, kindTusd},
	} {
		dir, err := mkdir(base, s.slug)
		if err != nil {
			return err
		}
		logDir, err := mkdir(base, s.slug+"-log")
		if err != nil {
			return err
		}
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p, err := startChild(s.name, self, []string{s.flag, dir, "-addr", addr}, nil, logDir, addr)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		servers = append(servers, &server{name: s.name, kind: s.kind, endpoint: "http://" + addr + s.basePath, dir: dir, proc: p})
	}

	if !o.onlyBaselines {
		// tusd keeps no hash; the module computes sha256 by default, so it
		// runs both ways.
		for _, c := range []struct{ name, slug, extra string }{
			{"caddy hash none", "caddy-nohash", "\t\thash none\n"},
			{"caddy sha256", "caddy-sha256", ""},
		} {
			dir, err := mkdir(base, c.slug)
			if err != nil {
				return err
			}
			p, err := startCaddy(o.caddy, base, c.slug, dir, c.extra)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			servers = append(servers, &server{name: c.name, kind: kindCaddy, endpoint: "http://" + p.addr + caddyTusPath, dir: dir, proc: p})
		}
	}

	var rows []*row
	for _, s := range servers {
		rows = append(rows,
			&row{srv: s, mode: "one PATCH", patchSize: 0},
			&row{srv: s, mode: humanBytes(o.patchSize) + " PATCHes", patchSize: o.patchSize},
		)
	}
	for _, s := range servers {
		fmt.Printf("  %-6s %s -> %s\n", s.name, s.endpoint, s.dir)
	}

	transport := &http.Transport{
		Proxy:               nil, // loopback only, never a proxy
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: 1,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}
	client := &http.Client{
		Transport: transport,
		// tus never redirects; a redirect would lose the PATCH body.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	n := len(rows)
	for r := 0; r < o.rounds; r++ {
		fmt.Printf("\nround %d/%d\n", r+1, o.rounds)
		// A new random order each round: a cyclic rotation would give each
		// row the same predecessor every time, and the predecessor's
		// writeback and clean-up would then bias one row.
		order := mrand.Perm(n)
		for j := 0; j < n; j++ {
			rw := rows[order[j]]
			s := rw.srv
			if err := s.proc.checkAlive(); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			memBefore, err := s.proc.beforeUpload()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}

			// A fresh connection per upload; the PATCHes of one upload share it.
			transport.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
			res, err := tusUpload(ctx, client, s.endpoint, o.size, rw.patchSize, chunk)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w%s", rw.name(), err, s.proc.logTail())
			}

			hwm, err := readStatusKB(s.proc.pid(), "VmHWM")
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			grow := hwm - memBefore
			rw.memGrow = append(rw.memGrow, grow)
			rw.patches = res.patches

			// Untimed checks: HEAD, stored file, then delete it.
			headNote, err := checkHead(client, res.location, o.size)
			if err != nil {
				return fmt.Errorf("%s: %w%s", rw.name(), err, s.proc.logTail())
			}
			if err := checkAndRemoveStored(s, res.location, o.size, chunk); err != nil {
				return fmt.Errorf("%s: %w%s", rw.name(), err, s.proc.logTail())
			}
			syscall.Sync() // settle writeback before the next upload (untimed)

			rw.secs = append(rw.secs, res.secs)
			fmt.Printf("  %-24s %8.3f s  %9.1f MiB/s  %3d PATCH(es)  peak mem growth %7.1f MiB%s\n",
				rw.name(), res.secs, mibps(o.size, res.secs), res.patches, float64(grow)/mib, headNote)
		}
	}

	printSummary(o, rows)
	return nil
}

// ---------------------------------------------------------------------------
// tus client

// repeatReader yields left bytes of chunk, repeated, starting at chunk[off].
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

// contentAt returns a reader for bytes [off, off+n) of the upload's content.
func contentAt(chunk []byte, off, n int64) *repeatReader {
	return &repeatReader{chunk: chunk, off: int(off % int64(len(chunk))), left: n}
}

type uploadResult struct {
	secs     float64
	location string // absolute upload URL
	patches  int
}

// tusUpload creates an upload of size bytes at endpoint and PATCHes the
// content (in one PATCH if patchSize is 0). The time runs from the creation
// request to the response of the last PATCH.
func tusUpload(ctx context.Context, client *http.Client, endpoint string, size, patchSize int64, chunk []byte) (uploadResult, error) {
	var res uploadResult
	if patchSize <= 0 || patchSize > size {
		patchSize = size
	}
	start := time.Now()

	// Creation.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
	if err != nil {
		return res, err
	}
	req.Header.Set("Tus-Resumable", tusVersion)
	req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	req.Header.Set("Upload-Metadata", "filename "+base64.StdEncoding.EncodeToString([]byte(fileName)))
	resp, err := client.Do(req)
	if err != nil {
		return res, fmt.Errorf("POST %s: %w", endpoint, err)
	}
	body := drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return res, fmt.Errorf("POST %s: HTTP %d, want 201; body: %.300q", endpoint, resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return res, fmt.Errorf("POST %s: 201 without a Location header", endpoint)
	}
	u, err := resp.Request.URL.Parse(loc) // relative or absolute
	if err != nil {
		return res, fmt.Errorf("POST %s: bad Location %q: %w", endpoint, loc, err)
	}
	res.location = u.String()

	// PATCHes.
	var offset int64
	for offset < size {
		n := min(patchSize, size-offset)
		req, err := http.NewRequestWithContext(ctx, http.MethodPatch, res.location, contentAt(chunk, offset, n))
		if err != nil {
			return res, err
		}
		req.ContentLength = n
		req.Header.Set("Tus-Resumable", tusVersion)
		req.Header.Set("Upload-Offset", strconv.FormatInt(offset, 10))
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		resp, err := client.Do(req)
		res.patches++
		if err != nil {
			return res, fmt.Errorf("PATCH %s at offset %d (%d bytes): %w%s", res.location, offset, n, err, headProbe(client, res.location))
		}
		body := drain(resp)
		if resp.StatusCode != http.StatusNoContent {
			return res, fmt.Errorf("PATCH %s at offset %d (%d bytes): HTTP %d, want 204; body: %.300q%s",
				res.location, offset, n, resp.StatusCode, body, headProbe(client, res.location))
		}
		got, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
		if err != nil || got != offset+n {
			return res, fmt.Errorf("PATCH %s at offset %d (%d bytes): Upload-Offset %q, want %d",
				res.location, offset, n, resp.Header.Get("Upload-Offset"), offset+n)
		}
		offset = got
	}
	res.secs = time.Since(start).Seconds()
	return res, nil
}

// drain reads (up to 1 MiB of) the response body and closes it, so that the
// connection can be reused.
func drain(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return strings.TrimSpace(string(b))
}

func head(client *http.Client, loc string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, loc, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Tus-Resumable", tusVersion)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	drain(resp)
	return resp, nil
}

// headProbe is for error messages: what the server says about the upload.
func headProbe(client *http.Client, loc string) string {
	resp, err := head(client, loc)
	if err != nil {
		return "\n(HEAD " + loc + " fails too: " + err.Error() + ")"
	}
	return fmt.Sprintf("\n(HEAD %s: HTTP %d, Upload-Offset %q, Upload-Length %q)",
		loc, resp.StatusCode, resp.Header.Get("Upload-Offset"), resp.Header.Get("Upload-Length"))
}

// checkHead asks for the offset of the finished upload. A server may forget
// an upload once it is complete (404/410); that is noted, not a failure.
func checkHead(client *http.Client, loc string, size int64) (string, error) {
	resp, err := head(client, loc)
	if err != nil {
		return "", fmt.Errorf("HEAD %s after the upload: %w", loc, err)
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent:
		if got := resp.Header.Get("Upload-Offset"); got != strconv.FormatInt(size, 10) {
			return "", fmt.Errorf("HEAD %s after the upload: Upload-Offset %q, want %d", loc, got, size)
		}
		return "", nil
	case http.StatusNotFound, http.StatusGone:
		return fmt.Sprintf("  (HEAD after completion: %d)", resp.StatusCode), nil
	default:
		return "", fmt.Errorf("HEAD %s after the upload: HTTP %d", loc, resp.StatusCode)
	}
}

// checkAndRemoveStored checks the stored file's size and samples its content,
// then deletes it (and tusd's .info file).
func checkAndRemoveStored(s *server, loc string, size int64, chunk []byte) error {
	stored := filepath.Join(s.dir, fileName)
	var extra []string
	if s.kind == kindTusd {
		u, err := url.Parse(loc)
		if err != nil {
			return err
		}
		id := path.Base(u.Path)
		if id == "" || id == "." || id == "/" || strings.ContainsAny(id, `/\`) {
			return fmt.Errorf("cannot take an upload id from %q", loc)
		}
		stored = filepath.Join(s.dir, id)
		extra = append(extra, stored+".info")
	}
	st, err := os.Stat(stored)
	if err != nil {
		return fmt.Errorf("stored file: %v (dir contains: %s)", err, listDir(s.dir))
	}
	if st.Size() != size {
		return fmt.Errorf("stored file %s has %d bytes, want %d", stored, st.Size(), size)
	}
	if err := sampleContent(stored, size, chunk); err != nil {
		return err
	}
	for _, p := range append([]string{stored}, extra...) {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("removing %s: %w", p, err)
		}
	}
	// Anything else left behind (e.g. upload state) is reported once.
	if left, files := dirUsage(s.dir); left > 0 && !s.leftWarn {
		s.leftWarn = true
		fmt.Printf("  NOTE: %s leaves %d bytes in %d file(s) in %s after the stored file is deleted: %s\n",
			s.name, left, files, s.dir, listDir(s.dir))
	}
	return nil
}

// sampleContent compares 64 KiB of the stored file with what was sent at the
// start, at the end and at 8 random offsets (catches misplaced PATCHes).
func sampleContent(p string, size int64, chunk []byte) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	const n = 64 << 10
	offs := []int64{0, max(0, size-n)}
	for i := 0; i < 8 && size > n; i++ {
		offs = append(offs, mrand.Int64N(size-n))
	}
	got := make([]byte, n)
	want := make([]byte, n)
	for _, off := range offs {
		l := min(int64(n), size-off)
		if _, err := f.ReadAt(got[:l], off); err != nil {
			return fmt.Errorf("reading %s at %d: %w", p, off, err)
		}
		if _, err := io.ReadFull(contentAt(chunk, off, l), want[:l]); err != nil {
			return err
		}
		if !bytes.Equal(got[:l], want[:l]) {
			return fmt.Errorf("stored file %s: content differs from what was sent in [%d, %d)", p, off, off+l)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// child modes: raw and tusd servers

func childMain(args []string) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	raw := fs.String("serve-raw", "", "serve the raw tus baseline into this dir")
	tusdDir := fs.String("serve-tusd", "", "serve tusd into this dir")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var h http.Handler
	switch {
	case *raw != "":
		h = newRawServer(*raw)
	case *tusdDir != "":
		store := filestore.New(*tusdDir)
		locker := memorylocker.New()
		composer := tusd.NewStoreComposer()
		store.UseIn(composer)
		locker.UseIn(composer)
		th, err := tusd.NewHandler(tusd.Config{
			BasePath:      tusdBasePath,
			StoreComposer: composer,
		})
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle(tusdBasePath, http.StripPrefix(tusdBasePath, th))
		mux.Handle(strings.TrimSuffix(tusdBasePath, "/"), http.StripPrefix(strings.TrimSuffix(tusdBasePath, "/"), th))
		h = mux
	default:
		return errors.New("need -serve-raw DIR or -serve-tusd DIR")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// rawServer is the smallest tus 1.0 server (creation + core) that stores
// into dir/bench.bin: POST creates the empty file, PATCH checks the offset
// and io.Copy's the body to the end of the file, HEAD reports the size.
type rawServer struct {
	dir     string
	mu      sync.Mutex
	lengths map[string]int64 // upload id -> Upload-Length
}

func newRawServer(dir string) *rawServer {
	return &rawServer{dir: dir, lengths: make(map[string]int64)}
}

func (s *rawServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Tus-Resumable", tusVersion)
	if !strings.HasPrefix(r.URL.Path, rawBasePath) {
		http.NotFound(w, r)
		return
	}
	id := strings.TrimPrefix(r.URL.Path, rawBasePath)
	p := filepath.Join(s.dir, fileName)

	if r.Method == http.MethodPost && id == "" {
		length, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
		if err != nil || length < 0 {
			http.Error(w, "bad Upload-Length", http.StatusBadRequest)
			return
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		f.Close()
		var b [16]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
		s.mu.Lock()
		s.lengths[id] = length
		s.mu.Unlock()
		w.Header().Set("Location", rawBasePath+id)
		w.WriteHeader(http.StatusCreated)
		return
	}

	s.mu.Lock()
	length, ok := s.lengths[id]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	st, err := os.Stat(p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodHead:
		w.Header().Set("Upload-Offset", strconv.FormatInt(st.Size(), 10))
		w.Header().Set("Upload-Length", strconv.FormatInt(length, 10))
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		if r.Header.Get("Content-Type") != "application/offset+octet-stream" {
			http.Error(w, "bad Content-Type", http.StatusUnsupportedMediaType)
			return
		}
		if off, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64); err != nil || off != st.Size() {
			http.Error(w, "Upload-Offset mismatch", http.StatusConflict)
			return
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n, err := io.Copy(f, r.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && st.Size()+n > length {
			err = fmt.Errorf("upload is longer than its Upload-Length %d", length)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Upload-Offset", strconv.FormatInt(st.Size()+n, 10))
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "HEAD, PATCH")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// ---------------------------------------------------------------------------
// child processes

type childProc struct {
	name    string
	cmd     *exec.Cmd
	addr    string
	logPath string
	exited  chan struct{}
	waitErr error

	clearRefsOK  bool
	rssAtStartKB int64
	warnedOnce   bool
}

func (p *childProc) pid() int { return p.cmd.Process.Pid }

// startChild starts bin with args (output to logDir/NAME.log) and waits
// until addr accepts connections.
func startChild(name, bin string, args, env []string, logDir, addr string) (*childProc, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = logDir
	cmd.Env = append(os.Environ(), env...)
	// If this process dies without cleaning up, the kernel kills the child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &childProc{name: name, cmd: cmd, addr: addr, logPath: logPath, exited: make(chan struct{})}
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
			return nil, fmt.Errorf("%s exited during startup: %v%s", name, p.waitErr, p.logTail())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not listen on %s within 30s%s", name, addr, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Memory accounting: can VmHWM be reset?
	rss, err := readStatusKB(p.pid(), "VmRSS")
	if err != nil {
		return nil, err
	}
	p.rssAtStartKB = rss
	p.clearRefsOK = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.pid()), []byte("5"), 0) == nil
	fmt.Printf("  started %s pid %d on %s, RSS %.1f MiB\n", name, p.pid(), addr, float64(p.rssAtStartKB)/mib)
	return p, nil
}

func startCaddy(bin, base, slug, root, extra string) (*childProc, error) {
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
		fsync off
%s	}
}
`, port, caddyfileToken(root), extra)
	cfgPath := filepath.Join(cfgDir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(caddyfile), 0o644); err != nil {
		return nil, err
	}
	// Keep Caddy's data/config storage inside the temp dir.
	env := []string{
		"XDG_DATA_HOME=" + filepath.Join(cfgDir, "data"),
		"XDG_CONFIG_HOME=" + filepath.Join(cfgDir, "config"),
	}
	return startChild(slug, bin, []string{"run", "--config", cfgPath, "--adapter", "caddyfile"}, env, cfgDir, addr)
}

// beforeUpload resets VmHWM (if possible) and returns the baseline (bytes)
// against which VmHWM after the upload is compared.
func (p *childProc) beforeUpload() (int64, error) {
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

func (p *childProc) checkAlive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s (pid %d) exited: %v%s", p.name, p.pid(), p.waitErr, p.logTail())
	default:
		return nil
	}
}

func (p *childProc) stop() {
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

func (p *childProc) logTail() string {
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
	return "\n--- " + p.name + " log (" + p.logPath + ", last lines) ---\n" + strings.Join(lines, "\n")
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

func printSummary(o options, rows []*row) {
	rawMedian := map[string]float64{} // mode -> raw's median MiB/s
	for _, r := range rows {
		if r.srv.kind == kindRaw {
			rawMedian[r.mode] = mibps(o.size, median(r.secs))
		}
	}
	kind := "VmHWM - VmRSS before upload, VmHWM reset via clear_refs"
	for _, r := range rows {
		if !r.srv.proc.clearRefsOK {
			kind = "VmHWM - VmRSS at start: clear_refs not writable"
		}
	}

	fmt.Printf("\nper-row results (%d upload(s) each, %s per upload):\n", o.rounds, humanBytes(o.size))
	for _, r := range rows {
		fmt.Printf("  %-24s median %8.1f MiB/s  (times: %s)\n", r.name(), mibps(o.size, median(r.secs)), fmtSecs(r.secs))
	}

	fmt.Printf("\nratio = row median / raw median in the same mode; peak mem growth = max over uploads of %s\n", kind)
	fmt.Printf("%-26s %12s %8s %15s %17s\n", "server, mode", "median MiB/s", "vs raw", "min..max MiB/s", "peak mem growth")
	for _, r := range rows {
		med := mibps(o.size, median(r.secs))
		lo, hi := minMax(r.secs, o.size)
		fmt.Printf("%-26s %12.1f %8.2f %15s %17s\n", r.name(), med, med/rawMedian[r.mode],
			fmt.Sprintf("%.0f..%.0f", lo, hi), fmt.Sprintf("%.1f MiB", float64(maxInt64(r.memGrow))/mib))
	}
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
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
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

// dirUsage sums the sizes of the regular files under dir.
func dirUsage(dir string) (bytes int64, files int) {
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
