// Package httpversions_test runs Caddy with the module, built as a child
// process on free loopback ports, behind which a small Go app records every
// request it gets, and talks to it with real clients over each HTTP version:
// HTTP/1.1 and h2c on a plain port, HTTP/2 and HTTP/3 on a TLS port with a
// certificate from Caddy's internal CA. The tests check what the client gets
// (status, JSON code, headers), what the app received, and what is on disk.
// See README.md.
package httpversions_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/reflexupload/caddy-reflex-upload/e2e/internal/caddyrun"
	"github.com/reflexupload/caddy-reflex-upload/e2e/supervisor"
)

// Limits of the site (see siteConfig).
const (
	maxSize        = 20000  // max_size of /track and /store
	maxFiles       = 3      // max_files of /track
	maxRequestSize = 200000 // max_request_size of /track and /store
)

// testHeader tags each request so that the app's record can be found.
const testHeader = "X-Test-Tag"

func TestMain(m *testing.M) {
	code := m.Run()
	caddyrun.Cleanup()
	os.Exit(code)
}

// siteConfig is the Caddyfile: the same site on a plain port (HTTP/1.1 and
// h2c) and on a TLS port (HTTP/1.1, HTTP/2, HTTP/3), with the module in
// track mode under /track and in store mode under /store, and the app
// behind reverse_proxy.
const siteConfig = `{
	admin off
	persist_config off
	skip_install_trust
	grace_period 1s
	http_port {HTTP_PORT}
	https_port {HTTPS_PORT}
	auto_https disable_redirects
	servers :{HTTP_PORT} {
		protocols h1 h2c
	}
	servers :{HTTPS_PORT} {
		protocols h1 h2 h3
	}
}
(site) {
	reflex_upload {
		prefix /track
		root {ROOT}/track
		mode track
		max_size {MAX_SIZE}
		max_files {MAX_FILES}
		max_request_size {MAX_REQUEST_SIZE}
	}
	reflex_upload {
		prefix /store
		root {ROOT}/store
		max_size {MAX_SIZE}
		max_request_size {MAX_REQUEST_SIZE}
	}
	reverse_proxy {APP}
}
http://:{HTTP_PORT} {
	import site
}
https://localhost:{HTTPS_PORT} {
	tls internal
	import site
}
`

// site is a running Caddy with its app and a client per HTTP version.
type site struct {
	ctx     context.Context
	root    string // holds track/ and store/, the two upload roots
	app     *app
	plain   string // host:port of the plain listener
	secure  string // host:port of the TLS listener
	clients []*client
	caddy   *caddyrun.Server
}

// client is a real client of one HTTP version.
type client struct {
	name  string // "HTTP/1.1", "h2c", "HTTP/2", "HTTP/3"
	proto int    // the ProtoMajor its answers must have
	base  string // scheme://host:port
	http  *http.Client
}

// startSite builds Caddy (once per test process), starts the app and Caddy,
// and returns the site once every client can reach it.
func startSite(t *testing.T) *site {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	bin, err := caddyrun.Caddy()
	if err != nil {
		t.Fatalf("building Caddy: %v", err)
	}
	base := t.TempDir()
	s := &site{ctx: ctx, root: filepath.Join(base, "uploads"), app: newApp(t)}
	for _, d := range []string{"track", "store"} {
		if err := os.MkdirAll(filepath.Join(s.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.plain = caddyrun.FreeAddr(t)
	s.secure = freeTCPAndUDP(t)
	_, httpPort, _ := net.SplitHostPort(s.plain)
	_, httpsPort, _ := net.SplitHostPort(s.secure)
	config := strings.NewReplacer(
		"{HTTP_PORT}", httpPort, "{HTTPS_PORT}", httpsPort, "{ROOT}", s.root, "{APP}", s.app.addr(),
		"{MAX_SIZE}", fmt.Sprint(maxSize), "{MAX_FILES}", fmt.Sprint(maxFiles), "{MAX_REQUEST_SIZE}", fmt.Sprint(maxRequestSize),
	).Replace(siteConfig)
	cfg, err := supervisor.Caddy(bin, base, config)
	if err != nil {
		t.Fatal(err)
	}
	s.caddy = caddyrun.Serve(t, ctx, cfg, nil)

	// Caddy's internal CA signs the TLS listener's certificate: trust it.
	rootCert := filepath.Join(base, "home", "data", "caddy", "pki", "authorities", "local", "root.crt")
	var pool *x509.CertPool
	s.waitFor(t, "the internal CA's root certificate", func() bool {
		pem, err := os.ReadFile(rootCert)
		if err != nil {
			return false
		}
		pool = x509.NewCertPool()
		return pool.AppendCertsFromPEM(pem)
	})
	tlsConfig := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	// Every client dials the loopback address, whatever localhost resolves to.
	dialTo := func(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
		return func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		}
	}
	newTransport := func(addr string, protos func(*http.Protocols)) *http.Transport {
		tr := &http.Transport{DialContext: dialTo(addr), TLSClientConfig: tlsConfig.Clone(), Protocols: new(http.Protocols)}
		protos(tr.Protocols)
		return tr
	}
	h3 := &http3.Transport{
		TLSClientConfig: tlsConfig.Clone(),
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddrEarly(ctx, s.secure, tlsCfg, cfg)
		},
	}
	s.clients = []*client{
		{name: "HTTP/1.1", proto: 1, base: "http://" + s.plain,
			http: &http.Client{Transport: newTransport(s.plain, func(p *http.Protocols) { p.SetHTTP1(true) })}},
		{name: "h2c", proto: 2, base: "http://" + s.plain,
			http: &http.Client{Transport: newTransport(s.plain, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) })}},
		{name: "HTTP/2", proto: 2, base: "https://localhost:" + httpsPort,
			http: &http.Client{Transport: newTransport(s.secure, func(p *http.Protocols) { p.SetHTTP2(true) })}},
		{name: "HTTP/3", proto: 3, base: "https://localhost:" + httpsPort,
			http: &http.Client{Transport: h3}},
	}
	for _, c := range s.clients {
		c.http.Timeout = time.Minute
		t.Cleanup(c.http.CloseIdleConnections)
	}
	t.Cleanup(func() { h3.Close() })

	// Ready when every client gets an answer from the app.
	for _, c := range s.clients {
		s.waitFor(t, c.name+" to reach the site", func() bool {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/ready", nil)
			res, err := c.http.Do(req)
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK && res.ProtoMajor == c.proto
		})
	}
	return s
}

// freeTCPAndUDP returns a loopback address whose port was free for both TCP
// and UDP a moment ago (HTTP/3 listens on the TLS port's UDP twin).
func freeTCPAndUDP(t *testing.T) string {
	t.Helper()
	for range 50 {
		addr := caddyrun.FreeAddr(t)
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return ""
}

// waitFor polls cond until it holds; Caddy exiting or the test's time
// running out fails the test.
func (s *site) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if err := s.caddy.WaitUntil(s.ctx, what, cond); err != nil {
		t.Fatal(err)
	}
}

// client returns the client of one HTTP version.
func (s *site) client(name string) *client {
	for _, c := range s.clients {
		if c.name == name {
			return c
		}
	}
	panic("no client " + name)
}

// do sends one request and reads the whole answer; an answer of the wrong
// HTTP version fails the test.
func (c *client) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	res, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", req.Method, req.URL.Path, c.name, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s over %s: reading the answer: %v", req.Method, req.URL.Path, c.name, err)
	}
	if res.ProtoMajor != c.proto {
		t.Fatalf("%s %s: answered over %s; want %s", req.Method, req.URL.Path, res.Proto, c.name)
	}
	return res, body
}

// post sends body to path. A streamed body is sent without a length
// (chunked over HTTP/1.1, no content-length over HTTP/2 and HTTP/3).
func (c *client) post(t *testing.T, ctx context.Context, path string, hdr http.Header, ctype string, body []byte, streamed bool) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if streamed {
		r = struct{ io.Reader }{r} // hides the length
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if streamed {
		req.ContentLength = -1
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", ctype)
	return c.do(t, req)
}

// app is the app behind reverse_proxy: it reads each request's body to its
// end (or its failure), records it and answers 200 "app says 200".
type app struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []appRequest
	// open counts requests whose body is still being read, by tag.
	open map[string]int
}

// appRequest is what the app received.
type appRequest struct {
	tag      string
	path     string
	body     []byte
	complete bool // the body was read to its end without error
}

func newApp(t *testing.T) *app {
	t.Helper()
	a := &app{open: map[string]int{}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tag := r.Header.Get(testHeader)
		a.mu.Lock()
		a.open[tag]++
		a.mu.Unlock()
		body, err := io.ReadAll(r.Body)
		a.mu.Lock()
		a.got = append(a.got, appRequest{tag: tag, path: r.URL.Path, body: body, complete: err == nil})
		a.open[tag]--
		a.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "app says 200")
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

// received waits (bounded) until the app has finished reading every
// request tagged tag that it began, and returns them.
func (a *app) received(t *testing.T, tag string) []appRequest {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // a request still on its way
	for end := time.Now().Add(10 * time.Second); ; {
		a.mu.Lock()
		open := a.open[tag]
		var out []appRequest
		for _, g := range a.got {
			if g.tag == tag {
				out = append(out, g)
			}
		}
		a.mu.Unlock()
		if open == 0 {
			return out
		}
		if time.Now().After(end) {
			t.Fatalf("the app is still reading request %q after 10 s", tag)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// filePart is one file of a multipart body.
type filePart struct {
	name string
	data []byte
}

// multipartBody builds a body as a browser's FormData does, one "files"
// part per file, and returns it with its Content-Type and boundary.
func multipartBody(t *testing.T, files ...filePart) ([]byte, string, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, f := range files {
		hdr := textproto.MIMEHeader{}
		hdr.Set("Content-Disposition", fmt.Sprintf(`form-data; name="files"; filename=%q`, f.name))
		hdr.Set("Content-Type", "application/octet-stream")
		p, err := w.CreatePart(hdr)
		if err != nil {
			t.Fatal(err)
		}
		p.Write(f.data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w.FormDataContentType(), w.Boundary()
}

// errorBody is the module's JSON error.
type errorBody struct {
	Detail string `json:"detail"`
	Code   string `json:"code"`
	File   string `json:"file"`
}

// assertError checks an answer is the module's error with this status and code.
func assertError(t *testing.T, res *http.Response, body []byte, status int, code string) {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil || res.StatusCode != status || e.Code != code {
		t.Fatalf("answer %d %q; want %d with code %q", res.StatusCode, caddyrun.Tail(string(body), 500), status, code)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("answer Content-Type %q; want application/json", ct)
	}
}

// progress is the module's progress JSON.
type progress struct {
	State    string `json:"state"`
	Received int64  `json:"received"`
	Size     int64  `json:"size"`
	Status   int    `json:"status"`
	Code     string `json:"code"`
}

// progressOf reads an upload's progress over HTTP/1.1.
func (s *site) progressOf(t *testing.T, prefix, id string) progress {
	t.Helper()
	req, _ := http.NewRequestWithContext(s.ctx, http.MethodGet, s.client("HTTP/1.1").base+prefix+"/.uploads/"+id, nil)
	res, body := s.client("HTTP/1.1").do(t, req)
	var p progress
	if err := json.Unmarshal(body, &p); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("progress of %s: %d %q", id, res.StatusCode, body)
	}
	return p
}

// filesUnder lists the files (not folders) under dir, the private folder
// included.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
