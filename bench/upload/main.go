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
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/bench/internal/kit"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

const (
	fileName  = "bench.bin"
	fieldName = "files"
)

// ---------------------------------------------------------------------------
// targets

type target struct {
	name    string
	url     string
	dir     string // where the uploaded file lands (dir/bench.bin)
	isCaddy bool
	proc    *kit.Measured // nil for baselines
	poll    bool          // poll the upload's progress 10 times a second meanwhile
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
	var o kit.Options
	o.Flags("the in-process raw and stdlib baselines")
	o.Parse()
	kit.Main(func() error { return run(o) })
}

func run(o kit.Options) error {
	base, err := kit.TempDir("reflex-upload-bench-", o.KeepTmp)
	if err != nil {
		return err
	}

	fmt.Printf("reflex_upload benchmark: %s per upload (%d bytes), %d round(s), %s, %d CPU(s)\n",
		kit.HumanBytes(o.Size), o.Size, o.Rounds, runtime.Version(), runtime.NumCPU())
	fmt.Printf("temp dir: %s\n", base)

	// The file content: a 4 MiB random buffer repeated.
	chunk, err := kit.RandomChunk()
	if err != nil {
		return err
	}
	body := newBodyTemplate(chunk, o.Size)

	var targets []*target

	rawDir, err := kit.Mkdir(base, "raw")
	if err != nil {
		return err
	}
	rawURL, err := startBaseline(rawHandler(rawDir))
	if err != nil {
		return err
	}
	targets = append(targets, &target{name: "raw (io.Copy body to file)", url: rawURL, dir: rawDir, expect: body.contentLength()})

	stdDir, err := kit.Mkdir(base, "stdlib")
	if err != nil {
		return err
	}
	stdURL, err := startBaseline(stdlibHandler(stdDir))
	if err != nil {
		return err
	}
	targets = append(targets, &target{name: "stdlib mime/multipart", url: stdURL, dir: stdDir, expect: o.Size})

	if !o.OnlyBaselines {
		for _, c := range []struct {
			name, slug string
			options    []string
		}{
			{"caddy fsync off, hash none", "caddy-fast", []string{"fsync off", "hash none"}},
			{"caddy fsync off, hash sha256", "caddy-hash", []string{"fsync off"}},
			{"caddy defaults", "caddy-defaults", nil},
		} {
			p, dir, err := kit.StartCaddyIn(base, c.slug, o.Caddy, c.options)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			targets = append(targets, &target{
				name: c.name, url: "http://" + p.Addr + "/_upload", dir: dir, isCaddy: true, proc: p, expect: o.Size,
			})
			if c.slug == "caddy-fast" {
				// The same server, its progress polled 10 times a second during the upload.
				targets = append(targets, &target{
					name: c.name + ", polled", url: "http://" + p.Addr + "/_upload", dir: dir, isCaddy: true, proc: p,
					expect: o.Size, poll: true,
				})
			}
		}
	}
	for _, t := range targets {
		fmt.Printf("  %-28s %s -> %s\n", t.name, t.url, t.dir)
	}

	client := &http.Client{
		Timeout: o.Timeout,
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
	for r := 0; r < o.Rounds; r++ {
		fmt.Printf("\nround %d/%d\n", r+1, o.Rounds)
		for _, t := range kit.Shuffled(targets) {
			if t.proc != nil {
				if err := t.proc.Alive(); err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
			}

			var memBefore int64
			var cpuBefore float64
			if t.proc != nil {
				memBefore, err = t.proc.BeforeUpload()
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				cpuBefore = t.proc.CPUSeconds()
			}

			secs, res, err := upload(client, t.url, body, t.poll)
			if err != nil {
				return fmt.Errorf("%s: %w%s%s", t.name, err, probe(client, t.url, chunk), logTail(t.proc))
			}

			memLine := ""
			if t.proc != nil {
				grow, err := t.proc.Growth(memBefore)
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				t.memGrow = append(t.memGrow, grow)
				t.cpu = append(t.cpu, t.proc.CPUSeconds()-cpuBefore)
				memLine = fmt.Sprintf("  peak mem growth %7.1f MiB", float64(grow)/kit.MiB)
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
				return fmt.Errorf("%s: stored file: %v (dir contains: %s)", t.name, err, kit.ListDir(t.dir))
			}
			if st.Size() != t.expect {
				return fmt.Errorf("%s: stored file %s has %d bytes, want %d", t.name, stored, st.Size(), t.expect)
			}
			if err := os.Remove(stored); err != nil {
				return fmt.Errorf("%s: removing stored file: %w", t.name, err)
			}
			syscall.Sync() // settle writeback before the next run (untimed)

			t.secs = append(t.secs, secs)
			fmt.Printf("  %-28s %8.3f s  %9.1f MiB/s%s\n", t.name, secs, kit.MiBps(o.Size, secs), memLine)
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
	return io.MultiReader(bytes.NewReader(b.head), &kit.RepeatReader{Chunk: b.chunk, Left: b.size}, bytes.NewReader(b.tail))
}

func (b *bodyTemplate) sha256() string {
	h := sha256.New()
	if _, err := io.Copy(h, &kit.RepeatReader{Chunk: b.chunk, Left: b.size}); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
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
	kit.AtCleanup(func() { srv.Close() })
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

// logTail is the end of a Caddy's log, for failure messages.
func logTail(p *kit.Measured) string {
	if p == nil {
		return ""
	}
	return "\n--- caddy log (" + p.LogPath() + ", end) ---\n" + supervisor.Tail(p.Log(), 2000)
}

// ---------------------------------------------------------------------------
// output

func printSummary(o kit.Options, targets []*target) {
	raw := kit.Median(targets[0].secs)
	rawMiBps := kit.MiBps(o.Size, raw)

	fmt.Printf("\nper-target results (%d run(s) each, %s per upload):\n", o.Rounds, kit.HumanBytes(o.Size))
	for _, t := range targets {
		s := append([]float64(nil), t.secs...)
		sort.Float64s(s)
		fmt.Printf("  %-28s median %8.1f MiB/s  min %8.1f  max %8.1f  (times: %s)\n",
			t.name, kit.MiBps(o.Size, kit.Median(s)), kit.MiBps(o.Size, s[len(s)-1]), kit.MiBps(o.Size, s[0]), kit.FmtSecs(t.secs))
		if t.isCaddy {
			fmt.Printf("  %-28s peak mem growth max %.1f MiB over %d upload(s) [%s]\n",
				"", float64(kit.MaxInt64(t.memGrow))/kit.MiB, len(t.memGrow), t.proc.PeakKind())
		}
	}

	fmt.Printf("\n%-30s %12s %14s %17s %19s\n", "target", "median MiB/s", "ratio vs raw", "min..max MiB/s", "peak mem growth")
	for _, t := range targets {
		med := kit.MiBps(o.Size, kit.Median(t.secs))
		lo, hi := kit.MinMax(t.secs, o.Size)
		mem := "-"
		if t.isCaddy {
			mem = fmt.Sprintf("%.1f MiB", float64(kit.MaxInt64(t.memGrow))/kit.MiB)
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
			kit.Median(ratios), kit.FmtRatios(ratios))
		// Wall time on a shared 2-core box with the client beside the server
		// is noisy; the CPU the server spends is the steadier measure of
		// what polling costs it.
		fmt.Printf("Caddy CPU seconds per upload: unpolled median %.3f, polled median %.3f (ratio %.3f)\n",
			kit.Median(base.cpu), kit.Median(t.cpu), kit.Median(t.cpu)/kit.Median(base.cpu))
	}
}
