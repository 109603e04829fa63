package reflexupload

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// expectGuard makes an upload request refused before its body answer at
// once, and close, when it asked "Expect: 100-continue".
//
// Go's HTTP/1.1 server sends "100 Continue" when the handler first reads
// the body, and it closes the connection after an answer given without
// reading it, since the client never sends a body it was not asked for. But
// it can tell only while the request's body is its own: Caddy wraps it
// (read timeouts, access logs), and the server then tries to discard, before
// it answers, a body that is not coming, and the client waits until a
// timeout. So the guard notes whether the body was read. An answer given
// without reading it says "Connection: close", so the server sends it at
// once, and when the handler is done the read deadline is set to now, so
// the server gives up its last read of the body and closes the connection.
// (HTTP/2 and HTTP/3 need nothing: the answer ends the stream.)
type expectGuard struct {
	io.ReadCloser
	read   atomic.Bool
	cut    atomic.Bool // answered without reading the body
	header http.Header
	rc     *http.ResponseController
}

// guardExpect puts a guard on an HTTP/1.x request with a body that expects
// 100-continue, and returns the response writer to answer it with; for any
// other request it returns w and a nil guard.
func guardExpect(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *expectGuard) {
	if r.ProtoMajor != 1 || r.Body == nil || r.ContentLength == 0 ||
		!strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return w, nil
	}
	g := &expectGuard{ReadCloser: r.Body, header: w.Header(), rc: http.NewResponseController(w)}
	r.Body = g
	return &expectWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, g: g}, g
}

func (g *expectGuard) Read(p []byte) (int, error) {
	g.read.Store(true)
	return g.ReadCloser.Read(p)
}

// answered marks an answer that is given without reading the body to close
// the connection.
func (g *expectGuard) answered() {
	if !g.read.Load() {
		g.cut.Store(true)
		g.header.Set("Connection", "close")
	}
}

// handlerDone covers the answer Caddy writes for an error the handler
// returned (the header is shared down the chain of writers), and ends the
// reading of a body that was not asked for.
func (g *expectGuard) handlerDone(err error) {
	if err != nil {
		g.answered()
	}
	if g.cut.Load() {
		_ = g.rc.SetReadDeadline(time.Now())
	}
}

// expectWriter is the response writer of a guarded request.
type expectWriter struct {
	*caddyhttp.ResponseWriterWrapper
	g     *expectGuard
	wrote bool
}

func (w *expectWriter) WriteHeader(status int) {
	if !w.wrote && status >= http.StatusOK {
		w.wrote = true
		w.g.answered()
	}
	w.ResponseWriterWrapper.WriteHeader(status)
}

func (w *expectWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.Write(p)
}

func (w *expectWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.ReadFrom(r)
}
