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
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/bench/internal/kit"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

const (
	fileName     = "bench.bin"
	tusVersion   = "1.0.0"
	rawBasePath  = "/raw/"
	caddyTusPath = "/_upload/.uploads"
)

type options struct {
	kit.Options
	patchSize int64
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
	proc     *kit.Measured
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
	// Hidden child modes: serve tusd / raw (re-exec of this binary).
	kit.ServeTusdChild()
	if len(os.Args) == 4 && os.Args[1] == rawFlag {
		if err := serveRaw(os.Args[2], os.Args[3]); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", rawFlag, err)
			os.Exit(1)
		}
		return
	}

	var o options
	patch := kit.Size(16 << 20)
	o.Flags("raw and tusd")
	flag.Var(&patch, "patch-size", "bytes per PATCH in the chunked mode (e.g. 16MiB)")
	o.Parse()
	o.patchSize = int64(patch)
	kit.Main(func() error { return run(o) })
}

func run(o options) error {
	self, err := kit.Self()
	if err != nil {
		return err
	}

	base, err := kit.TempDir("reflex-tus-bench-", o.KeepTmp)
	if err != nil {
		return err
	}

	fmt.Printf("tus benchmark: %s per upload (%d bytes), PATCHes of %s in the chunked mode, %d round(s), %s, %d CPU(s)\n",
		kit.HumanBytes(o.Size), o.Size, kit.HumanBytes(o.patchSize), o.Rounds, runtime.Version(), runtime.NumCPU())
	fmt.Printf("temp dir: %s\n", base)

	// The file content: a 4 MiB random buffer repeated.
	chunk, err := kit.RandomChunk()
	if err != nil {
		return err
	}

	var servers []*server

	// raw and tusd: this binary, re-executed.
	for _, s := range []struct {
		name, basePath string
		kind           serverKind
	}{
		{"raw", rawBasePath, kindRaw},
		{"tusd", kit.TusdBasePath, kindTusd},
	} {
		p, dir, err := kit.StartIn(base, s.name, func(store, dir, addr string) (supervisor.Config, error) {
			if s.kind == kindRaw {
				return supervisor.Config{Name: "raw", Argv: []string{self, rawFlag, store, addr},
					Dir: dir, Log: filepath.Join(dir, "raw.log")}, nil
			}
			return kit.TusdConfig(self, store, dir, addr), nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		servers = append(servers, &server{name: s.name, kind: s.kind, endpoint: "http://" + p.Addr + s.basePath, dir: dir, proc: p})
	}

	if !o.OnlyBaselines {
		// tusd keeps no hash; the module computes sha256 by default, so it
		// runs both ways.
		for _, c := range []struct {
			name, slug string
			options    []string
		}{
			{"caddy hash none", "caddy-nohash", []string{"fsync off", "hash none"}},
			{"caddy sha256", "caddy-sha256", []string{"fsync off"}},
		} {
			p, dir, err := kit.StartCaddyIn(base, c.slug, o.Caddy, c.options)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			servers = append(servers, &server{name: c.name, kind: kindCaddy, endpoint: "http://" + p.Addr + caddyTusPath, dir: dir, proc: p})
		}
	}

	var rows []*row
	for _, s := range servers {
		rows = append(rows,
			&row{srv: s, mode: "one PATCH", patchSize: 0},
			&row{srv: s, mode: kit.HumanBytes(o.patchSize) + " PATCHes", patchSize: o.patchSize},
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

	for r := 0; r < o.Rounds; r++ {
		fmt.Printf("\nround %d/%d\n", r+1, o.Rounds)
		for _, rw := range kit.Shuffled(rows) {
			s := rw.srv
			if err := s.proc.Alive(); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			memBefore, err := s.proc.BeforeUpload()
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}

			// A fresh connection per upload; the PATCHes of one upload share it.
			transport.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
			res, err := tusUpload(ctx, client, s.endpoint, o.Size, rw.patchSize, chunk)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w%s", rw.name(), err, logTail(s.proc))
			}

			grow, err := s.proc.Growth(memBefore)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			rw.memGrow = append(rw.memGrow, grow)
			rw.patches = res.patches

			// Untimed checks: HEAD, stored file, then delete it.
			headNote, err := checkHead(client, res.location, o.Size)
			if err != nil {
				return fmt.Errorf("%s: %w%s", rw.name(), err, logTail(s.proc))
			}
			if err := checkAndRemoveStored(s, res.location, o.Size, chunk); err != nil {
				return fmt.Errorf("%s: %w%s", rw.name(), err, logTail(s.proc))
			}
			syscall.Sync() // settle writeback before the next upload (untimed)

			rw.secs = append(rw.secs, res.secs)
			fmt.Printf("  %-24s %8.3f s  %9.1f MiB/s  %3d PATCH(es)  peak mem growth %7.1f MiB%s\n",
				rw.name(), res.secs, kit.MiBps(o.Size, res.secs), res.patches, float64(grow)/kit.MiB, headNote)
		}
	}

	printSummary(o, rows)
	return nil
}

// ---------------------------------------------------------------------------
// tus client

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
		req, err := http.NewRequestWithContext(ctx, http.MethodPatch, res.location, kit.ContentAt(chunk, offset, n))
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
		return fmt.Errorf("stored file: %v (dir contains: %s)", err, kit.ListDir(s.dir))
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
	if left, files := kit.DirUsage(s.dir); left > 0 && !s.leftWarn {
		s.leftWarn = true
		fmt.Printf("  NOTE: %s leaves %d bytes in %d file(s) in %s after the stored file is deleted: %s\n",
			s.name, left, files, s.dir, kit.ListDir(s.dir))
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
		if _, err := io.ReadFull(kit.ContentAt(chunk, off, l), want[:l]); err != nil {
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

// rawFlag is the hidden first argument with which the benchmark
// re-executes itself as the raw server: -serve-raw DIR ADDR.
const rawFlag = "-serve-raw"

// serveRaw serves the raw tus baseline into dir on addr.
func serveRaw(dir, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: newRawServer(dir), ReadHeaderTimeout: 10 * time.Second}
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

// logTail is the end of a server's log, for failure messages.
func logTail(p *kit.Measured) string {
	return "\n--- " + p.Name() + " log (" + p.LogPath() + ", end) ---\n" + supervisor.Tail(p.Log(), 2000)
}

// ---------------------------------------------------------------------------
// output

func printSummary(o options, rows []*row) {
	rawMedian := map[string]float64{} // mode -> raw's median MiB/s
	for _, r := range rows {
		if r.srv.kind == kindRaw {
			rawMedian[r.mode] = kit.MiBps(o.Size, kit.Median(r.secs))
		}
	}
	kind := "VmHWM - VmRSS before upload, VmHWM reset via clear_refs"
	for _, r := range rows {
		if !r.srv.proc.ClearRefsOK {
			kind = "VmHWM - VmRSS at start: clear_refs not writable"
		}
	}

	fmt.Printf("\nper-row results (%d upload(s) each, %s per upload):\n", o.Rounds, kit.HumanBytes(o.Size))
	for _, r := range rows {
		fmt.Printf("  %-24s median %8.1f MiB/s  (times: %s)\n", r.name(), kit.MiBps(o.Size, kit.Median(r.secs)), kit.FmtSecs(r.secs))
	}

	fmt.Printf("\nratio = row median / raw median in the same mode; peak mem growth = max over uploads of %s\n", kind)
	fmt.Printf("%-26s %12s %8s %15s %17s\n", "server, mode", "median MiB/s", "vs raw", "min..max MiB/s", "peak mem growth")
	for _, r := range rows {
		med := kit.MiBps(o.Size, kit.Median(r.secs))
		lo, hi := kit.MinMax(r.secs, o.Size)
		fmt.Printf("%-26s %12.1f %8.2f %15s %17s\n", r.name(), med, med/rawMedian[r.mode],
			fmt.Sprintf("%.0f..%.0f", lo, hi), fmt.Sprintf("%.1f MiB", float64(kit.MaxInt64(r.memGrow))/kit.MiB))
	}
}
