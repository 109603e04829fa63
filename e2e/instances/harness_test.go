// Package instances_test runs several Caddy instances with reflex_upload
// side by side, the way a site runs them behind a load balancer: each is
// Caddy built from ./cmd/caddy as a child process on its own loopback port,
// all with `state redis` on one private redis-server and `storage local` on
// one shared root folder (which stands in for shared storage), or, in
// s3_test.go, `storage s3` on one bucket behind a load balancer. A request
// may land on any instance; the tests send each request to the instance
// they choose and check what clients see: statuses, JSON, stored bytes.
package instances_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
	"github.com/reflexupload/caddy-reflex-upload/internal/enginetest"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	// testTimeout bounds each test: the instances and every wait.
	testTimeout = 3 * time.Minute
	// tokenHeader carries the owner value (the module's default owner).
	tokenHeader = "Reflex-Client-Token"
)

func TestMain(m *testing.M) {
	code := m.Run()
	caddyrun.Cleanup()
	os.Exit(code)
}

// instance is one Caddy of a cluster.
type instance struct {
	name  string
	addr  string
	caddy *caddyrun.Server
}

func (n *instance) url(path string) string { return "http://" + n.addr + path }

// cluster is n Caddy instances sharing one Redis and one root folder.
type cluster struct {
	ctx   context.Context
	root  string
	redis string
	nodes []*instance
}

// startCluster starts a redis-server and n instances (named A, B, C, …).
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	redisAddr := enginetest.Redis(t)
	bin, err := caddyrun.Caddy()
	if err != nil {
		t.Fatalf("building Caddy: %v", err)
	}
	base := t.TempDir()
	root := filepath.Join(base, "shared-root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("files under the shared root:\n%s", caddyrun.ListFiles(root))
		}
	})
	c := &cluster{ctx: ctx, root: root, redis: redisAddr}
	upload := []string{
		"storage local",
		"state redis {",
		"\taddress " + redisAddr,
		"\tkey_prefix e2e:",
		"}",
	}
	for i := range n {
		name := string(rune('A' + i))
		addr := caddyrun.FreeAddr(t)
		c.nodes = append(c.nodes, startCaddy(t, ctx, bin, base, name, addr, supervisor.UploadSite(addr, root, nil, upload)))
	}
	return c
}

// startCaddy runs Caddy on site in base/name, with env added to its
// environment, and waits until it listens on addr.
func startCaddy(t *testing.T, ctx context.Context, bin, base, name, addr, site string, env ...string) *instance {
	t.Helper()
	dir := filepath.Join(base, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := supervisor.Caddy(bin, dir, site)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Name = "Caddy " + name
	cfg.Env = append(cfg.Env, env...)
	return &instance{name: name, addr: addr, caddy: caddyrun.Serve(t, ctx, cfg, caddyrun.Listening(addr))}
}

// randomBytes returns n bytes from seed.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// do sends a request and reads its whole answer.
func do(t *testing.T, method, url string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: time.Minute}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	return res, b
}

// snapshot is the progress JSON.
type snapshot struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`
	State    string          `json:"state"`
	Received int64           `json:"received"`
	Size     *int64          `json:"size"`
	Status   int             `json:"status"`
	Code     string          `json:"code"`
	Files    json.RawMessage `json:"files"`
}

// progressOf reads the progress of id at n as owner token.
func progressOf(t *testing.T, n *instance, id, token string) (snapshot, []byte) {
	t.Helper()
	res, body := do(t, http.MethodGet, n.url("/_upload/.uploads/"+id), map[string]string{tokenHeader: token}, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("progress of %s at %s: %d %s", id, n.name, res.StatusCode, body)
	}
	var s snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("progress of %s at %s: %v: %s", id, n.name, err, body)
	}
	return s, body
}

// waitProgress polls the progress of id at n until ok holds.
func waitProgress(t *testing.T, n *instance, id, token string, ok func(snapshot) bool) snapshot {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, body := progressOf(t, n, id, token)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress of %s at %s never got there; last: %s", id, n.name, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawRequest is a request written by hand on its own connection, so that
// its body can be sent in steps, stall, and be answered before it ends.
type rawRequest struct {
	conn net.Conn
	body []byte
	sent int
}

// startRaw connects to n and writes the request head (with a
// Content-Length of len(body)) but no body.
func startRaw(t *testing.T, n *instance, method, path string, hdr map[string]string, body []byte) *rawRequest {
	t.Helper()
	conn, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var head strings.Builder
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", method, path, n.addr, len(body))
	for k, v := range hdr {
		fmt.Fprintf(&head, "%s: %s\r\n", k, v)
	}
	head.WriteString("\r\n")
	if _, err := io.WriteString(conn, head.String()); err != nil {
		t.Fatal(err)
	}
	return &rawRequest{conn: conn, body: body}
}

// write sends the next n bytes of the body (fewer at its end). A write
// error (the server answered and closed) ends the sending quietly: the
// answer tells.
func (r *rawRequest) write(n int) error {
	n = min(n, len(r.body)-r.sent)
	if _, err := r.conn.Write(r.body[r.sent : r.sent+n]); err != nil {
		return err
	}
	r.sent += n
	return nil
}

// pace sends the rest of the body in steps of step bytes, every interval.
func (r *rawRequest) pace(step int, interval time.Duration) {
	for r.sent < len(r.body) {
		if r.write(step) != nil {
			return
		}
		time.Sleep(interval)
	}
}

// response reads the answer.
func (r *rawRequest) response(t *testing.T) (*http.Response, []byte) {
	t.Helper()
	res, body, err := r.read()
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

// read reads the answer; for goroutines other than the test's.
func (r *rawRequest) read() (*http.Response, []byte, error) {
	r.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(r.conn), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer's body: %w", err)
	}
	return res, b, nil
}

// multipartBody is a multipart/form-data body with one file part, and its
// Content-Type.
func multipartBody(name string, data []byte) ([]byte, string) {
	return multipartFiles(namedFile{name, data})
}

// namedFile is a file part of a multipart body.
type namedFile struct {
	name string
	data []byte
}

// multipartFiles is a multipart/form-data body with the files in order,
// and its Content-Type.
func multipartFiles(files ...namedFile) ([]byte, string) {
	const boundary = "instances-test-boundary"
	var b bytes.Buffer
	for _, f := range files {
		fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=\"files\"; filename=%q\r\n"+
			"Content-Type: application/octet-stream\r\n\r\n", boundary, f.name)
		b.Write(f.data)
		b.WriteString("\r\n")
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes(), "multipart/form-data; boundary=" + boundary
}

// sendRaw sends a whole request on its own connection while reading the
// answer, which may come (and the connection close) before the body is
// all sent, as for a refused upload.
func sendRaw(t *testing.T, n *instance, method, path string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	r := startRaw(t, n, method, path, hdr, body)
	sending := make(chan struct{})
	go func() { defer close(sending); r.pace(256*kib, 0) }()
	res, b := r.response(t)
	r.conn.Close() // ends the sending if the answer came first
	<-sending
	return res, b
}

// startMultipart starts a standard upload of one file to n, id and token
// in headers; no body byte is sent yet.
func startMultipart(t *testing.T, n *instance, id, token, name string, data []byte) *rawRequest {
	t.Helper()
	body, ctype := multipartBody(name, data)
	return startRaw(t, n, http.MethodPost, "/_upload", map[string]string{
		"Content-Type": ctype, "X-Progress-ID": id, tokenHeader: token,
	}, body)
}

// assertJSON compares JSON by value.
func assertJSON(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s: not JSON: %v: %s", what, err, got)
		return
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: the wanted JSON: %v", what, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("%s:\n got %s\nwant %s", what, gb, wb)
	}
}

// storedFiles lists the regular files under the shared root, private
// folder included, as slash paths.
func storedFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, path)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
