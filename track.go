package reflexupload

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/formstream"
	"github.com/reflexupload/caddy-reflex-upload/internal/names"
)

// trackBufferSize is the multipart reader's large buffer when tracking:
// the body is only looked at, so the smallest the reader takes does (it
// reads the chunks the app's reads hand it, so it rarely needs more than
// its small buffer).
const trackBufferSize = 1

// holdBack is how many of the last bytes read the app gets only once the
// body has ended as declared and passed every check. It is more than the
// longest close delimiter line with its padding, so the app never sees a
// body that looks complete, at the HTTP level or to a multipart parser,
// before it is.
const holdBack = 2 << 10

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
	body := &bodyReader{r: r.Body, limit: h.MaxRequestSize, declared: r.ContentLength}
	ctx, entry, release, err := h.startUpload(w, r, id, kindMultipart, body)
	if err != nil {
		return h.refuse(w, err)
	}
	defer release()
	began := time.Now()

	tr := newTrackReader(h, body, params["boundary"])
	defer tr.stop() // the inspector ends whatever happens
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

	// How it ended: the module's verdict on the body comes first. A body
	// that was not handed on whole because its client went away (an aborted
	// upload) is an error, whatever the proxy made of it.
	switch {
	case errors.Is(context.Cause(ctx), errCancelled):
		verdict = errUploadCancelled
	case verdict == nil && errors.Is(tr.clientErr(), errBodyTooLarge):
		verdict = errRequestTooLarge // in the epilogue
	case verdict == nil && !tr.delivered.Load() && (tr.clientErr() != nil || r.Context().Err() != nil):
		cause := tr.clientErr()
		if cause == nil {
			cause = context.Cause(r.Context())
		}
		verdict = errInvalidRequest.with(cause, "reading the request body failed: the client went away or sent too little")
	}
	if verdict != nil {
		h.finish(r, entry, body, nil, verdict, began)
		if sw.status != 0 {
			return nil // the app had answered before; the body was cut under it
		}
		return h.refuse(w, verdict)
	}
	if sw.dropped {
		// The whole body went through and its client is gone: no one is
		// left to answer.
		h.finish(r, entry, body, tr.files, nil, began)
		return nil
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

// errTrackStopped ends the inspection when the app stopped reading the
// body before its end: what the app does with a body it did not read is
// its business.
var errTrackStopped = errors.New("the app stopped reading the body")

// trackReader is the body the app reads in track mode: the client's bytes,
// unchanged, in lockstep with an inspector that checks them. Each read's
// bytes go to the app only once the inspector has looked at all of them and
// asks for more, so a violation stops the body before the bytes that break
// the limit (but for a tail, shorter than a delimiter, that the multipart
// reader has not placed yet). The last holdBack bytes go to the app only
// when the body has ended as declared and the inspector has passed it
// whole, so the app never receives a complete body that breaks a limit or
// that ends before its length.
//
// Read is called by one goroutine at a time (the proxy's), which may go on
// after the handler returned; stop, from the handler, is safe beside it.
type trackReader struct {
	src *bodyReader

	// The inspector's side (see feed).
	in      chan feedChunk
	ack     chan struct{}
	done    chan struct{} // closed when the inspector has its verdict
	verdict error         // set before done is closed
	files   []storedFile  // what the inspector saw, for progress; read after done
	stopped chan struct{} // closed by stop
	once    sync.Once

	// The reader's side.
	tail    []byte // bytes read but held back, at most holdBack of them
	spare   []byte // the other buffer of the tail
	passing bool   // the inspector passed the body: the rest is not inspected
	ended   bool   // the body ended and passed: the tail goes out, then EOF
	err     error  // sticky error of Read

	failed    atomic.Bool // Read ended in an error other than io.EOF
	delivered atomic.Bool // Read handed the whole body out, then io.EOF
	mu        sync.Mutex
	srcErr    error // why reading the client's body failed
}

// feedChunk is what the reader hands the inspector: the bytes of one read,
// and end when the body ended with that read (io.EOF or the read error).
type feedChunk struct {
	b   []byte
	end error
}

func newTrackReader(h *Handler, src *bodyReader, boundary string) *trackReader {
	t := &trackReader{
		src:     src,
		in:      make(chan feedChunk),
		ack:     make(chan struct{}),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
		tail:    make([]byte, 0, holdBack),
		spare:   make([]byte, 0, holdBack),
	}
	go func() {
		defer close(t.done)
		f := &feed{t: t}
		mr := formstream.NewReader(f, boundary, trackBufferSize)
		t.verdict = t.inspect(h, mr, f)
		mr.Release()
	}()
	return t
}

func (t *trackReader) Read(p []byte) (int, error) {
	n, err := t.read(p)
	switch {
	case err == io.EOF:
		t.delivered.Store(true)
	case err != nil:
		t.failed.Store(true)
	}
	return n, err
}

func (t *trackReader) read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	select {
	case <-t.stopped:
		// The handler has returned: the client's body is no longer there
		// to read.
		t.err = errTrackStopped
		return 0, t.err
	default:
	}
	if len(p) == 0 {
		return 0, nil
	}
	if t.ended {
		n := copy(p, t.tail)
		t.tail = t.tail[:copy(t.tail, t.tail[n:])]
		if len(t.tail) == 0 {
			t.err = io.EOF
		}
		return n, t.err
	}
	for {
		n, err := t.src.Read(p)
		if err != nil && err != io.EOF {
			t.mu.Lock()
			t.srcErr = err
			t.mu.Unlock()
		}
		if !t.passing && (n > 0 || err != nil) {
			over, verdict := t.check(p[:n], err)
			switch {
			case verdict != nil:
				t.err = verdict
				return 0, verdict
			case over:
				t.passing = true
			}
		}
		if err != nil && err != io.EOF {
			t.err = err
			return 0, err // what is held back never goes out
		}
		t.ended = err == io.EOF
		if out := t.shift(p, n); out > 0 || t.ended {
			if t.ended && len(t.tail) == 0 {
				t.err = io.EOF
			}
			return out, t.err
		}
	}
}

// shift puts the n bytes just read into p behind the tail held back, and
// moves to the front of p what may go out: all but the last holdBack bytes,
// or as much as p holds once the body has ended. It returns how many.
func (t *trackReader) shift(p []byte, n int) int {
	total := len(t.tail) + n
	keep := min(total, holdBack)
	if t.ended {
		keep = max(total-len(p), 0)
	}
	out := total - keep
	// The new tail: the last keep bytes of tail+p[:n].
	nt := t.spare[:0]
	if from := out; from < len(t.tail) {
		nt = append(nt, t.tail[from:]...)
		nt = append(nt, p[:n]...)
	} else {
		nt = append(nt, p[from-len(t.tail):n]...)
	}
	// What goes out: the first out bytes of tail+p[:n].
	if out > len(t.tail) {
		copy(p[len(t.tail):out], p[:out-len(t.tail)])
		copy(p, t.tail)
	} else {
		copy(p, t.tail[:out])
	}
	t.tail, t.spare = nt, t.tail[:0]
	return out
}

// check hands the inspector the bytes of one read (and end, when the body
// ended with it) and waits until it has looked at all of them. over reports
// that the inspection is over; verdict is then its error, if any.
func (t *trackReader) check(b []byte, end error) (over bool, verdict error) {
	select {
	case t.in <- feedChunk{b, end}:
	case <-t.done:
		return true, t.verdict
	}
	if end == nil {
		select {
		case <-t.ack:
			return false, nil
		case <-t.done:
		}
	} else {
		<-t.done // the inspector ends on the body's end
	}
	return true, t.verdict
}

// clientErr is why reading the client's body failed, if it did.
func (t *trackReader) clientErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.srcErr
}

// stop ends the inspection when the app is done with the body and returns
// the verdict: nil, or the violation that cut the body.
func (t *trackReader) stop() error {
	t.once.Do(func() { close(t.stopped) })
	<-t.done
	var ue *uploadError
	if errors.As(t.verdict, &ue) {
		return ue
	}
	return nil
}

// feed is the inspector's view of the body: the chunks the reader hands
// it. When it has handed out a whole chunk and is asked for more, it tells
// the reader that chunk was looked at.
type feed struct {
	t   *trackReader
	cur []byte
	end error // the body's end (io.EOF, the read error) or errTrackStopped
	owe bool  // the reader waits to hear that cur was looked at
}

func (f *feed) Read(p []byte) (int, error) {
	for len(f.cur) == 0 {
		if f.end != nil {
			return 0, f.end
		}
		if f.owe {
			f.owe = false
			select {
			case f.t.ack <- struct{}{}:
			case <-f.t.stopped:
				f.end = errTrackStopped
				continue
			}
		}
		select {
		case c := <-f.t.in:
			f.cur, f.end, f.owe = c.b, c.end, c.end == nil
		case <-f.t.stopped:
			f.end = errTrackStopped
		}
	}
	n := copy(p, f.cur)
	f.cur = f.cur[n:]
	return n, nil
}

// inspect reads the multipart stream and checks it against the limits.
func (t *trackReader) inspect(h *Handler, mr *formstream.Reader, f *feed) error {
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return t.readError(err, f)
		}
		if !part.HasFileName() || part.FileName() == "" {
			continue
		}
		if err := t.inspectFile(h, part, f); err != nil {
			return err
		}
	}
}

// inspectFile checks one file part as it goes by.
func (t *trackReader) inspectFile(h *Handler, part *formstream.Part, f *feed) error {
	sent := names.FromDisposition(part.Header.Get("Content-Disposition"))
	if h.MaxFiles > 0 && len(t.files) >= h.MaxFiles {
		return errTooManyFiles.with(nil, "a request may hold at most %d files", h.MaxFiles).withFile(sent)
	}
	name, err := names.Sanitize(sent)
	if err == nil && names.HasDotDot(sent) {
		// The app gets the name as sent: a ".." in it must not reach it.
		err = errors.New(`file name holds a ".." segment`)
	}
	if err != nil {
		return errInvalidFilename.with(err, "%v", err).withFile(sent)
	}
	check := h.check.New(name, part.Header.Get("Content-Type"))
	for {
		// ChunkNow, not Chunk: the inspector looks at every byte it has
		// before it asks for more, which lets the reader pass them on.
		chunk, err := part.ChunkNow()
		if err == io.EOF {
			break
		}
		if err != nil {
			return t.readError(err, f)
		}
		if err := check.Write(chunk); err != nil {
			return checkError(err, sent)
		}
	}
	if err := check.End(); err != nil {
		return checkError(err, sent)
	}
	// The app decides where the file goes: progress reports the name as sent.
	t.files = append(t.files, storedFile{
		Field: part.FormName(), Name: path.Base(name), Path: sent, Size: check.Size(), ContentType: check.ContentType(),
	})
	return nil
}

// readError explains a failure to read the stream: over max_request_size,
// the client's body failing or the app stopping (told apart by serveTrack),
// a body that ends before its close delimiter, or a malformed one.
func (t *trackReader) readError(err error, f *feed) error {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return errRequestTooLarge
	case f.end != nil && f.end != io.EOF && errors.Is(err, f.end):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errInvalidRequest.with(err, "the body ends before the closing multipart boundary")
	}
	return errInvalidRequest.with(err, "malformed multipart body: %v", err)
}
