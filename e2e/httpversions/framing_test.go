package httpversions_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawConn is an HTTP/1.1 connection written by hand, so a test can send a
// request head without its body, or a body shorter than its length.
type rawConn struct {
	conn *net.TCPConn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{conn: conn.(*net.TCPConn), br: bufio.NewReader(conn)}
}

func (c *rawConn) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

// response reads the next answer, which must come within d.
func (c *rawConn) response(t *testing.T, d time.Duration) (*http.Response, []byte) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	start := time.Now()
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("no answer within %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	return res, body
}

// assertClosed checks that the server closes the connection within d.
func (c *rawConn) assertClosed(t *testing.T, d time.Duration) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	n, err := c.br.Read(make([]byte, 1))
	var ne net.Error
	if n > 0 || !(errors.Is(err, io.EOF) || errors.As(err, &ne) && !ne.Timeout()) {
		t.Fatalf("the connection is still open %v after the answer (read %d bytes, %v)", d, n, err)
	}
}

// TestExpectContinueRefused: a request with "Expect: 100-continue" that is
// refused before its body is answered at once, without asking for the body,
// with "Connection: close", and the connection is closed: for every upload
// kind that can refuse before reading.
func TestExpectContinueRefused(t *testing.T) {
	s := startSite(t)
	loc := tusCreate(t, s, 1000)
	const multipartType = "Content-Type: multipart/form-data; boundary=xyz\r\n"
	const tus = "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
	cases := []struct {
		name   string
		head   string // request line and headers but Host, Expect and the blank line
		status int
		code   string
	}{
		{"standard upload, not multipart", "POST /store HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n",
			http.StatusBadRequest, "invalid-request"},
		{"standard upload over max_request_size", "POST /store HTTP/1.1\r\n" + multipartType + fmt.Sprintf("Content-Length: %d\r\n", maxRequestSize+1),
			http.StatusRequestEntityTooLarge, "request-too-large"},
		{"track, not multipart", "POST /track HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n",
			http.StatusBadRequest, "invalid-request"},
		{"track over max_request_size", "POST /track HTTP/1.1\r\n" + multipartType + fmt.Sprintf("Content-Length: %d\r\n", maxRequestSize+1),
			http.StatusRequestEntityTooLarge, "request-too-large"},
		{"tus creation-with-upload over max_size", "POST /store/.uploads HTTP/1.1\r\n" + tus +
			fmt.Sprintf("Upload-Length: %d\r\nContent-Length: %d\r\nUpload-Metadata: filename %s\r\n", maxSize+1, maxSize+1, b64("big.bin")),
			http.StatusRequestEntityTooLarge, "file-too-large"},
		{"tus creation-with-upload longer than Upload-Length", "POST /store/.uploads HTTP/1.1\r\n" + tus +
			fmt.Sprintf("Upload-Length: 10\r\nContent-Length: 11\r\nUpload-Metadata: filename %s\r\n", b64("ten.bin")),
			http.StatusRequestEntityTooLarge, "file-too-large"},
		{"tus PATCH at the wrong offset", "PATCH " + loc + " HTTP/1.1\r\n" + tus + "Upload-Offset: 5\r\nContent-Length: 995\r\n",
			http.StatusConflict, "offset-mismatch"},
		{"tus PATCH not offset+octet-stream", "PATCH " + loc + " HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nContent-Type: text/plain\r\nUpload-Offset: 0\r\nContent-Length: 1000\r\n",
			http.StatusUnsupportedMediaType, "invalid-content-type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s.plain)
			c.write(t, []byte(tc.head+"Host: localhost\r\nExpect: 100-continue\r\n\r\n"))
			res, body := c.response(t, 3*time.Second)
			assertError(t, res, body, tc.status, tc.code)
			if !res.Close { // ReadResponse takes "Connection: close" out of the header
				t.Fatalf("the answer does not say Connection: close: %v", res.Header)
			}
			c.assertClosed(t, 3*time.Second)
		})
	}
	// The tus upload the PATCHes were refused for is untouched.
	if off := tusOffset(t, s, loc); off != 0 {
		t.Fatalf("the upload is at offset %d after refused PATCHes; want 0", off)
	}
}

// TestShortBody: a body that ends before its Content-Length (the client
// half-closes over HTTP/1.1, or ends its stream over HTTP/3) is incomplete:
// a standard upload is refused 400 and stores nothing, even when its close
// delimiter arrived; in track mode the app never sees that body end; a tus
// PATCH keeps what arrived (it can resume) but does not answer success.
func TestShortBody(t *testing.T) {
	s := startSite(t)
	data := bytes.Repeat([]byte("d"), 5000)
	body, ctype, boundary := multipartBody(t, filePart{"short.bin", data})
	declared := len(body) + 10

	// send sends body with Content-Length declared over HTTP/1.1 (then
	// half-closes) or HTTP/3 (then ends the stream).
	send := func(t *testing.T, proto, method, path string, hdr http.Header, body []byte) (*http.Response, []byte) {
		t.Helper()
		if proto == "HTTP/1.1" {
			c := dialRaw(t, s.plain)
			var head bytes.Buffer
			fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n", method, path, declared)
			hdr.Write(&head)
			head.WriteString("\r\n")
			c.write(t, append(head.Bytes(), body...))
			if err := c.conn.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			return c.response(t, 10*time.Second)
		}
		c := s.client(proto)
		req, err := http.NewRequestWithContext(s.ctx, method, c.base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(declared) // the HTTP/3 client sends a shorter body as it is
		for k, v := range hdr {
			req.Header[k] = v
		}
		return c.do(t, req)
	}

	for _, proto := range []string{"HTTP/1.1", "HTTP/3"} {
		t.Run(proto+"/standard upload", func(t *testing.T) {
			res, answer := send(t, proto, http.MethodPost, "/store", http.Header{"Content-Type": {ctype}}, body)
			assertError(t, res, answer, http.StatusBadRequest, "invalid-request")
			time.Sleep(100 * time.Millisecond)
			for _, f := range filesUnder(t, filepath.Join(s.root, "store")) {
				if !strings.HasPrefix(f, ".uploads/tus/") { // the tus uploads of the cases below
					t.Fatalf("a short body left %s", f)
				}
			}
		})
		t.Run(proto+"/track", func(t *testing.T) {
			tag := "short-" + proto
			res, answer := send(t, proto, http.MethodPost, "/track", http.Header{"Content-Type": {ctype}, testHeader: {tag}}, body)
			assertError(t, res, answer, http.StatusBadRequest, "invalid-request")
			for _, g := range s.app.received(t, tag) {
				if g.complete || bytes.Contains(g.body, []byte("--"+boundary+"--")) {
					t.Fatalf("the app saw the short body end: %s", describe([]appRequest{g}, len(body)))
				}
			}
		})
		t.Run(proto+"/tus PATCH", func(t *testing.T) {
			loc := tusCreate(t, s, declared)
			hdr := http.Header{"Tus-Resumable": {"1.0.0"}, "Content-Type": {"application/offset+octet-stream"}, "Upload-Offset": {"0"}}
			res, answer := send(t, proto, http.MethodPatch, loc, hdr, body)
			if res.StatusCode < 400 {
				t.Fatalf("a PATCH whose body ends before its Content-Length answered %d %q", res.StatusCode, answer)
			}
			if off := tusOffset(t, s, loc); off > int64(len(body)) {
				t.Fatalf("the upload is at offset %d; at most %d bytes arrived", off, len(body))
			}
			if _, err := os.Stat(filepath.Join(s.root, "store", "tus.bin")); !os.IsNotExist(err) {
				t.Fatalf("the incomplete upload was stored: %v", err)
			}
		})
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// tusCreate creates a tus upload of length bytes named tus.bin under
// /store and returns its path.
func tusCreate(t *testing.T, s *site, length int) string {
	t.Helper()
	c := s.client("HTTP/1.1")
	req, _ := http.NewRequestWithContext(s.ctx, http.MethodPost, c.base+"/store/.uploads", nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", strconv.Itoa(length))
	req.Header.Set("Upload-Metadata", "filename "+b64("tus.bin"))
	res, body := c.do(t, req)
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusCreated || loc == "" {
		t.Fatalf("tus creation: %d %q, Location %q", res.StatusCode, body, loc)
	}
	return loc
}

// tusOffset asks a tus upload's offset with HEAD.
func tusOffset(t *testing.T, s *site, loc string) int64 {
	t.Helper()
	c := s.client("HTTP/1.1")
	req, _ := http.NewRequestWithContext(s.ctx, http.MethodHead, c.base+loc, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	res, _ := c.do(t, req)
	off, err := strconv.ParseInt(res.Header.Get("Upload-Offset"), 10, 64)
	if res.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("HEAD %s: %d, Upload-Offset %q", loc, res.StatusCode, res.Header.Get("Upload-Offset"))
	}
	return off
}
