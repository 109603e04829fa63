package reflexupload

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/formstream"
)

// trackBufferSize is the multipart reader's buffer when tracking: the body
// is only looked at, so a small buffer does.
const trackBufferSize = 64 << 10

// serveTrack passes a standard upload on to the next handler unchanged,
// looking at the multipart stream as it goes by: it counts progress,
// enforces the limits, and stops the body at the first violation, so the
// app never gets a complete body that breaks a limit. The client then gets
// the module's error (when the app has not answered yet).
func (h *Handler) serveTrack(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	id, err := uploadIDOf(r)
	if err != nil {
		return h.refuse(w, err)
	}
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		return h.refuse(w, errInvalidRequest.with(err, "the body must be multipart/form-data with a boundary"))
	}
	if h.MaxRequestSize > 0 && r.ContentLength > h.MaxRequestSize {
		return h.refuse(w, errRequestTooLarge)
	}
	body := &bodyReader{r: r.Body, limit: h.MaxRequestSize}
	ctx, entry, release, err := h.startUpload(w, r, id, kindMultipart, body)
	if err != nil {
		return h.refuse(w, err)
	}
	defer release()
	began := time.Now()

	tr := newTrackReader(h, body, params["boundary"])
	r2 := r.Clone(r.Context())
	r2.Body = struct {
		io.Reader
		io.Closer
	}{tr, r.Body}
	// Once the body has failed, or the request was cancelled or its client
	// went away, what the proxy makes of it is dropped: the module answers.
	drop := func() bool { return tr.failed.Load() || ctx.Err() != nil }
	sw := &statusWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, drop: drop}
	err = next.ServeHTTP(sw, r2)
	verdict := tr.stop()

	// How it ended: the module's verdict on the body comes first.
	switch {
	case errors.Is(context.Cause(ctx), errCancelled):
		verdict = errUploadCancelled
	case verdict == nil && err != nil && body.err != nil:
		verdict = errInvalidRequest.with(body.err, "reading the request body failed: the client went away or sent too little")
	}
	if verdict != nil {
		h.finish(r, entry, body, nil, verdict, began)
		if sw.status != 0 {
			return nil // the app had answered before; the body was cut under it
		}
		return h.refuse(w, verdict)
	}
	if sw.dropped {
		// The body failed without a verdict (the client went away): what the
		// proxy made of that is dropped; Caddy answers the error.
		h.finish(r, entry, body, nil, err, began)
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	if err == nil && sw.status >= 400 {
		err = errAppRefused.status(sw.status)
	}
	h.finish(r, entry, body, tr.files, err, began)
	if errors.Is(err, errAppRefused) {
		return nil
	}
	return err
}

// trackReader is the body the app reads in track mode: the client's bytes,
// unchanged, each handed to an inspector before it is passed on. A
// violation the inspector finds ends the body with that error, and the
// final EOF is passed on only once the inspector has checked the whole body.
type trackReader struct {
	src  *bodyReader
	pw   *io.PipeWriter
	done chan error // the inspector's verdict, once
	err  error

	once    sync.Once // the verdict is taken once, by whoever asks first
	verdict error
	failed  atomic.Bool  // the body handed to the app ended in an error
	files   []storedFile // what the inspector saw, for progress
}

func newTrackReader(h *Handler, src *bodyReader, boundary string) *trackReader {
	pr, pw := io.Pipe()
	t := &trackReader{src: src, pw: pw, done: make(chan error, 1)}
	go func() {
		err := t.inspect(h, formstream.NewReader(pr, boundary, trackBufferSize))
		if err == nil {
			_, _ = io.Copy(io.Discard, pr) // the epilogue
		}
		pr.CloseWithError(err)
		t.done <- err
	}()
	return t
}

func (t *trackReader) Read(p []byte) (int, error) {
	n, err := t.read(p)
	if err != nil && err != io.EOF {
		t.failed.Store(true)
	}
	return n, err
}

func (t *trackReader) read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.src.Read(p)
	if n > 0 {
		if _, werr := t.pw.Write(p[:n]); werr != nil {
			t.err = t.settle(werr)
			return 0, t.err
		}
	}
	switch {
	case err == io.EOF:
		_ = t.pw.Close()
		if v := t.wait(); v != nil {
			t.err = v
			return 0, v
		}
		t.err = io.EOF
		return n, io.EOF
	case err != nil:
		t.pw.CloseWithError(err)
		t.err = err
	}
	return n, err
}

// settle explains why the pipe to the inspector broke: its verdict.
func (t *trackReader) settle(werr error) error {
	if v := t.wait(); v != nil {
		return v
	}
	return werr
}

// wait returns the inspector's verdict (once it has one). The transport of
// a reverse proxy may still read the body after the handler has returned,
// so wait is safe to call from both sides.
func (t *trackReader) wait() error {
	t.once.Do(func() { t.verdict = <-t.done })
	return t.verdict
}

// stop ends the inspection when the app is done with the body and returns
// the verdict: nil, or the violation that cut the body.
func (t *trackReader) stop() error {
	t.pw.CloseWithError(io.ErrUnexpectedEOF) // no-op once the body was read to its end
	v := t.wait()
	var ue *uploadError
	if errors.As(v, &ue) {
		return ue
	}
	return nil // a body the app did not read to its end is the app's business
}

// inspect reads the multipart stream and checks it against the limits.
func (t *trackReader) inspect(h *Handler, mr *formstream.Reader) error {
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return t.readError(err)
		}
		if !part.HasFileName() || part.FileName() == "" {
			continue
		}
		if err := t.inspectFile(h, part); err != nil {
			return err
		}
	}
}

// inspectFile checks one file part as it goes by.
func (t *trackReader) inspectFile(h *Handler, part *formstream.Part) error {
	sent := sentFileName(part.Header.Get("Content-Disposition"))
	if h.MaxFiles > 0 && len(t.files) >= h.MaxFiles {
		return errTooManyFiles.with(nil, "a request may hold at most %d files", h.MaxFiles).withFile(sent)
	}
	name, err := sanitizeFilename(sent)
	if err == nil && hasDotDot(sent) {
		// The app gets the name as sent: a ".." in it must not reach it.
		err = errors.New(`file name holds a ".." segment`)
	}
	if err != nil {
		return errInvalidFilename.with(err, "%v", err).withFile(sent)
	}
	check := h.newFileCheck(name, sent, part.Header.Get("Content-Type"))
	for {
		chunk, err := part.Chunk()
		if err == io.EOF {
			break
		}
		if err != nil {
			return t.readError(err)
		}
		if err := check.add(chunk); err != nil {
			return err
		}
	}
	if err := check.end(); err != nil {
		return err
	}
	// The app decides where the file goes: progress reports the name as sent.
	t.files = append(t.files, storedFile{
		Field: part.FormName(), Name: path.Base(name), Path: sent, Size: check.size, ContentType: check.contentType(),
	})
	return nil
}

// readError explains a failure to read the stream: the body reader's own
// error (over max_request_size) or a malformed body.
func (t *trackReader) readError(err error) error {
	switch {
	case errors.Is(err, errBodyTooLarge) || errors.Is(t.src.err, errBodyTooLarge):
		return errRequestTooLarge
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.ErrClosedPipe):
		return err // the body ended early: not the client's multipart's fault
	}
	return errInvalidRequest.with(err, "malformed multipart body: %v", err)
}

// hasDotDot reports whether a slash- or backslash-separated name has a ".."
// segment.
func hasDotDot(name string) bool {
	for seg := range strings.FieldsFuncSeq(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return true
		}
	}
	return false
}
