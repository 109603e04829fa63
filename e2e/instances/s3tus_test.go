package instances_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/noderun"
)

// Resumable (tus) uploads on the S3 cluster of s3_test.go: the bytes are
// in the bucket, so any instance takes an upload on.

// tusJS is one run of the stock tus-js-client (e2e/tusjs/upload.mjs).
type tusJS struct{ *noderun.Run }

// startTusJS uploads file to endpoint with tus-js-client as owner alice;
// watch sees each line of its log as it comes.
func startTusJS(t *testing.T, endpoint, file string, watch func(string), args ...string) *tusJS {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not found: the tus-js-client tests need Node.js and npm", tool)
			}
			t.Skipf("install %s to run the tus-js-client tests", tool)
		}
	}
	dir, err := filepath.Abs("../tusjs")
	if err != nil {
		t.Fatal(err)
	}
	if err := caddyrun.NPMInstall(dir, "tus-js-client"); err != nil {
		t.Fatalf("installing tus-js-client: %v", err)
	}
	args = append([]string{filepath.Join(dir, "upload.mjs"), "--endpoint", endpoint, "--file", file,
		"--header", tokenHeader + "=alice", "--retry-delays", "0,200,500,1000,2000,3000,5000,5000,5000"}, args...)
	return &tusJS{noderun.Start(t, context.Background(), dir, args, watch)}
}

// result waits for the end of the run: it must have succeeded.
func (r *tusJS) result(t *testing.T) (url string) {
	t.Helper()
	exit := r.Wait()
	var res struct {
		OK    bool   `json:"ok"`
		URL   string `json:"url"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout())), &res); err != nil || !res.OK {
		t.Fatalf("tus-js-client: %q (%v, exit %v)", r.Stdout(), err, exit)
	}
	return res.URL
}

// writeFile writes data to a file of the test and returns its path.
func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "upload.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// doneFile is the one file in the progress of a finished upload of
// /renamed.
func doneFile(t *testing.T, n *instance, id string) (path, sum string) {
	t.Helper()
	res, raw := do(t, http.MethodGet, n.url("/renamed/.uploads/"+id), map[string]string{tokenHeader: "alice"}, nil)
	var s snapshot
	if res.StatusCode != http.StatusOK || json.Unmarshal(raw, &s) != nil {
		t.Fatalf("progress of %s at %s: %d %s\n%s", id, n.name, res.StatusCode, raw, caddyrun.Tail(n.caddy.Log(), 3000))
	}
	var files []struct {
		Path   string `json:"path"`
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(s.Files, &files); s.State != "done" || err != nil || len(files) != 1 {
		t.Fatalf("progress of %s at %s: %s; want done with one file", id, n.name, raw)
	}
	return files[0].Path, files[0].SHA256
}

// TestS3TusJSThroughBalancer: tus-js-client uploads 64 MiB in 5 MiB
// chunks through the load balancer, so its PATCHes land on A, B and C in
// turn; mid-upload each instance answers HEAD with an offset no smaller
// than what the client saw accepted (and each HEAD stops the PATCH in
// flight, wherever it is, which the client resumes). The object is
// byte-identical, its sha256 reported, and nothing else is left.
func TestS3TusJSThroughBalancer(t *testing.T) {
	c := startS3Cluster(t)
	data := randomBytes(64*mib, 31)
	var once sync.Once
	heads := make(chan []int, 1)
	var loc string
	var locMu sync.Mutex
	watch := func(line string) {
		if _, l, ok := strings.Cut(line, " location="); ok && strings.HasPrefix(line, "http POST ") {
			locMu.Lock()
			loc = l
			locMu.Unlock()
		}
		if !strings.HasPrefix(line, "chunk accepted=") {
			return
		}
		acc, _ := strconv.Atoi(strings.Fields(strings.TrimPrefix(line, "chunk accepted="))[0])
		if acc < 20*mib {
			return
		}
		once.Do(func() {
			locMu.Lock()
			u := loc
			locMu.Unlock()
			i := strings.Index(u, "/renamed/")
			offs := []int{acc}
			for _, n := range c.nodes {
				offs = append(offs, tryHead(n, u[i:]))
			}
			heads <- offs
		})
	}
	run := startTusJS(t, c.lb.url("/renamed/.uploads"), writeFile(t, data), watch,
		"--chunk-size", strconv.Itoa(5*mib), "--filename", "big/tus.bin")
	url := run.result(t)
	id := path.Base(url)
	select {
	case h := <-heads:
		t.Logf("accepted %d when HEAD at A, B, C answered %v", h[0], h[1:])
		for i, off := range h[1:] {
			if off < h[0] || off > len(data) || (i > 0 && off < h[i]) {
				t.Errorf("HEAD at %s answered %d after %d was accepted (HEADs %v)", c.nodes[i].name, off, h[0], h[1:])
			}
		}
	default:
		t.Fatal("no chunk was accepted past 20 MiB")
	}
	seen := map[string]int{}
	for _, l := range run.Lines("http PATCH ") {
		if _, v, ok := strings.Cut(l, " x-instance="); ok {
			seen[strings.Fields(v)[0]]++
		}
	}
	t.Logf("PATCHes answered per instance: %v", seen)
	if len(seen) != 3 {
		t.Errorf("the PATCHes were answered by %v; want A, B and C", seen)
	}
	if got := c.object(t, "renamed/big/tus.bin"); !bytes.Equal(got, data) {
		t.Fatalf("the object holds %d bytes, not the %d sent", len(got), len(data))
	}
	for _, n := range c.nodes {
		p, sum := doneFile(t, n, id)
		if p != "big/tus.bin" || sum != sha256Hex(data) {
			t.Errorf("progress at %s: %s %s; want big/tus.bin with the data's sha256", n.name, p, sum)
		}
	}
	c.assertOnly(t, "renamed/big/tus.bin", "renamed/.uploads/tus/"+id+".info")
}

// tryHead is the offset that n answers HEAD with for alice's upload at
// loc, or minus the status of its answer when it is not an offset (off the
// test's goroutine: no t.Fatal).
func tryHead(n *instance, loc string) int {
	req, err := http.NewRequest(http.MethodHead, n.url(loc), nil)
	if err != nil {
		return -1
	}
	for k, v := range tusHeaders("alice") {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	res.Body.Close()
	off, err := strconv.Atoi(res.Header.Get("Upload-Offset"))
	if res.StatusCode != http.StatusOK || err != nil {
		return -res.StatusCode
	}
	return off
}

// TestS3TusRaceAcrossInstances sends two PATCHes of different bytes for
// one upload at once to A and to B, 20 times: at most one succeeds, the
// other gets 409 or 503, and the object completed from the offset is one
// body's exact prefix followed by the rest, never a mix.
func TestS3TusRaceAcrossInstances(t *testing.T) {
	c := startS3Cluster(t)
	a := c.nodes[0]
	const token, size = "alice", 1 * mib
	outcomes := map[string]int{}
	var want []string
	for i := range 20 {
		name := fmt.Sprintf("race-%02d.bin", i)
		bodies := [2][]byte{randomBytes(size, uint64(200+2*i)), randomBytes(size, uint64(201+2*i))}
		loc := createTus(t, a, token, name, size)
		want = append(want, "site/"+name, "site/.uploads/tus/"+path.Base(loc)+".info")
		outcomes[racePatches(t, i, c.nodes, token, loc, bodies, func() []byte { return c.object(t, "site/"+name) })]++
	}
	t.Logf("outcomes over 20 rounds: %v", outcomes)
	c.assertOnly(t, want...)
}

// TestS3TusKillThroughBalancer kills (SIGKILL) the instance receiving a
// PATCH of tus-js-client's upload through the load balancer: the client
// resumes through the others and the object is byte-identical.
func TestS3TusKillThroughBalancer(t *testing.T) {
	c := startS3Cluster(t)
	data := randomBytes(40*mib, 32)
	killed := make(chan string, 1)
	var once sync.Once
	watch := func(line string) {
		if !strings.HasPrefix(line, "progress sent=") {
			return
		}
		sent, _ := strconv.Atoi(strings.Fields(strings.TrimPrefix(line, "progress sent="))[0])
		if sent < 12*mib {
			return
		}
		once.Do(func() {
			n := receiving(c.nodes)
			if err := n.caddy.Process.Kill(); err != nil {
				killed <- "none: " + err.Error()
				return
			}
			killed <- n.name
		})
	}
	// 8 MiB/s through the client's own throttling proxy: a PATCH of 16 MiB
	// is in flight for two seconds.
	run := startTusJS(t, c.lb.url("/renamed/.uploads"), writeFile(t, data), watch,
		"--chunk-size", strconv.Itoa(16*mib), "--filename", "killed.bin", "--proxy-rate", strconv.Itoa(8*mib))
	url := run.result(t)
	select {
	case name := <-killed:
		if strings.HasPrefix(name, "none") {
			t.Fatalf("killing the receiving instance: %s", name)
		}
		t.Logf("killed %s mid-PATCH; %d retries", name, len(run.Lines("retry ")))
	default:
		t.Fatal("no instance was killed")
	}
	if len(run.Lines("retry ")) == 0 {
		t.Error("the client never retried: the kill did not cut a request")
	}
	if got := c.object(t, "renamed/killed.bin"); !bytes.Equal(got, data) {
		t.Fatalf("the object holds %d bytes, not the %d sent", len(got), len(data))
	}
	c.assertOnly(t, "renamed/killed.bin", "renamed/.uploads/tus/"+path.Base(url)+".info")
}

// receiving is the instance that reads the most bytes in 300 ms: the one
// receiving the PATCH.
func receiving(nodes []*instance) *instance {
	read := func(n *instance) int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", n.caddy.PID()))
		if err != nil {
			return 0
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "rchar: "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		return 0
	}
	before := make([]int64, len(nodes))
	for i, n := range nodes {
		before[i] = read(n)
	}
	time.Sleep(300 * time.Millisecond)
	best, most := nodes[0], int64(-1)
	for i, n := range nodes {
		if d := read(n) - before[i]; d > most {
			best, most = n, d
		}
	}
	return best
}

// TestS3TusNothingLeft: a terminated upload, one refused past max_size,
// and one whose name was taken before it completed leave no object of
// theirs, no tail and no open multipart upload, whichever instance had
// their bytes.
func TestS3TusNothingLeft(t *testing.T) {
	c := startS3Cluster(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	const token = "alice"

	// Cancelled: 9 MiB (a part and a tail) at A, DELETE at B.
	loc := createTus(t, a, token, "cancelled.bin", 12*mib)
	if res, body := patch(t, a, token, loc, 0, randomBytes(9*mib, 40)); res.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", res.StatusCode, body)
	}
	if res, _ := do(t, http.MethodDelete, b.url(loc), tusHeaders(token), nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE at B: %d", res.StatusCode)
	}
	if res, _ := do(t, http.MethodHead, cc.url(loc), tusHeaders(token), nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD at C after DELETE: %d", res.StatusCode)
	}

	// Refused: over max_size at creation, and a deferred length that goes
	// past it (the upload ends with its 413).
	res, body := do(t, http.MethodPost, a.url("/_upload/.uploads"), tusHeaders(token, "Upload-Length", strconv.Itoa(s3MaxSize+1),
		"Upload-Metadata", "filename eC5iaW4="), nil)
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("creation over max_size: %d %s", res.StatusCode, body)
	}
	res, _ = do(t, http.MethodPost, a.url("/_upload/.uploads"), tusHeaders(token, "Upload-Defer-Length", "1",
		"Upload-Metadata", "filename eC5iaW4="), nil)
	deferred := res.Header.Get("Location")
	if res, body := patch(t, b, token, deferred, 0, randomBytes(9*mib, 41)); res.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH of the deferred upload: %d %s", res.StatusCode, body)
	}
	if res, body := patch(t, cc, token, deferred, 9*mib, randomBytes(8*mib, 42)); res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("PATCH past max_size: %d %s; want 413", res.StatusCode, body)
	}

	// Failed: the name is taken (reject) before the upload completes.
	loc = createTus(t, a, token, "taken.bin", 10*mib)
	if res, body := patch(t, a, token, loc, 0, randomBytes(9*mib, 43)); res.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", res.StatusCode, body)
	}
	other := randomBytes(1000, 44)
	res, body = postFiles(t, b, "/_upload", namedFile{"taken.bin", other})
	stored(t, "the standard upload of taken.bin", res, body)
	res, body = patch(t, cc, token, loc, 9*mib, randomBytes(mib, 45))
	if res.StatusCode != http.StatusConflict || !strings.Contains(string(body), "file-exists") {
		t.Fatalf("completing over a taken name: %d %s; want 409 file-exists", res.StatusCode, body)
	}
	if got := c.object(t, "site/taken.bin"); !bytes.Equal(got, other) {
		t.Error("site/taken.bin is not the standard upload's")
	}
	c.assertOnly(t, "site/taken.bin")
}
