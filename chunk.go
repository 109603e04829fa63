package reflexupload

import (
	"context"
	"encoding/hex"
	"errors"
	"go.uber.org/zap"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/bufpool"
	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
	"github.com/reflexupload/caddy-reflex-upload/internal/names"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/store"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// Resumable uploads speak tus 1.0.0 (https://tus.io/protocols/resumable-upload)
// at {prefix}/.uploads: core, creation, creation-with-upload,
// creation-defer-length, termination, expiration, checksum and
// concatenation.
const (
	tusVersion     = tus.Version
	tusContentType = tus.ContentType
)

// tusCheckpoint is how many bytes a PATCH writes between two saves of the
// upload's state, so that a crash or a cut connection loses at most this
// much of a long PATCH.
const tusCheckpoint = 16 << 20

// Errors of the tus protocol. The requests the server cuts short (a newer
// request took over, the body stalled past idle_timeout or failed, the
// server shuts down) answer 503, which stock clients retry: they ask HEAD
// for the offset and resume, since what arrived is kept.
var (
	errTusVersion       = &uploadError{Status: http.StatusPreconditionFailed, Code: "unsupported-version", Detail: "Tus-Resumable must be 1.0.0"}
	errTusContentType   = &uploadError{Status: http.StatusUnsupportedMediaType, Code: "invalid-content-type", Detail: "PATCH needs Content-Type: application/offset+octet-stream"}
	errTusOffset        = &uploadError{Status: http.StatusConflict, Code: "offset-mismatch", Detail: "Upload-Offset does not match the upload's offset"}
	errTusGone          = &uploadError{Status: http.StatusGone, Code: "upload-expired", Detail: "the upload has expired"}
	errTusFinalPatch    = &uploadError{Status: http.StatusForbidden, Code: "final-upload", Detail: "a final upload of a concatenation cannot be patched"}
	errTusChecksum      = &uploadError{Status: 460, Code: "checksum-mismatch", Detail: "the chunk does not match Upload-Checksum; it was discarded"}
	errTusInterrupted   = &uploadError{Status: http.StatusServiceUnavailable, Code: "upload-interrupted", Detail: "a newer request for this upload took over; what was received is kept"}
	errTusShutdown      = &uploadError{Status: http.StatusServiceUnavailable, Code: "server-shutting-down", Detail: "the server is shutting down; what was received is kept, resume once it is back"}
	errTusMetadataSize  = &uploadError{Status: http.StatusRequestHeaderFieldsTooLarge, Code: "metadata-too-large", Detail: "Upload-Metadata is larger than 64 KiB"}
	errTusLengthUnknown = &uploadError{Status: http.StatusBadRequest, Code: "invalid-request", Detail: "Upload-Length or Upload-Defer-Length: 1 is required"}
)

// serveTusOptions answers OPTIONS {prefix}/.uploads: tus discovery.
func (h *Handler) serveTusOptions(w http.ResponseWriter) error {
	hdr := w.Header()
	hdr.Set("Tus-Resumable", tusVersion)
	hdr.Set("Tus-Version", tusVersion)
	hdr.Set("Tus-Extension", tus.Extensions(h.root.data))
	hdr.Set("Tus-Checksum-Algorithm", tus.Checksums)
	if h.MaxSize > 0 {
		hdr.Set("Tus-Max-Size", strconv.FormatInt(h.MaxSize, 10))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// tusPreamble sets the headers every tus answer carries and checks the
// client's protocol version.
func tusPreamble(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Tus-Resumable", tusVersion)
	if r.Header.Get("Tus-Resumable") != tusVersion {
		w.Header().Set("Tus-Version", tusVersion)
		return errTusVersion
	}
	return nil
}

// tusURL is the URL of a resumable upload.
func (h *Handler) tusURL(id string) string {
	return strings.TrimSuffix(h.Prefix, "/") + "/" + reservedDir + "/" + id
}

// setTusExpires sets Upload-Expires.
func setTusExpires(w http.ResponseWriter, info *tus.Info) {
	if !info.Done {
		w.Header().Set("Upload-Expires", info.Expires.UTC().Format(http.TimeFormat))
	}
}

// loadOwned loads upload id for a request: fs.ErrNotExist when there is
// none or it belongs to another owner.
func (h *Handler) loadOwned(r *http.Request, id string) (*tus.Info, error) {
	if !tus.ValidID(id) {
		return nil, fs.ErrNotExist
	}
	info, err := h.states.Load(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if info.OwnerHash != tus.OwnerHash(h.ownerOf(r)) {
		return nil, fs.ErrNotExist
	}
	return info, nil
}

// tusLoadError maps a failure to load an upload to an answer.
func tusLoadError(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errUploadNotFound.with(err, "no resumable upload has this id")
	}
	return storeError(err)
}

// expired reports whether an unfinished upload is past its expiry.
func (h *Handler) expired(info *tus.Info) bool {
	return info.Expired(h.root.now())
}

// serveTusCreate answers POST {prefix}/.uploads: a new resumable upload,
// with data already (creation-with-upload), or a final upload that
// concatenates partial ones.
func (h *Handler) serveTusCreate(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if err := tusPreamble(w, r); err != nil {
		return h.refuse(w, err)
	}
	if len(r.Header.Get("Upload-Metadata")) > tus.MaxMetadata {
		return h.refuse(w, errTusMetadataSize)
	}
	md, err := tus.ParseMetadata(r.Header.Get("Upload-Metadata"))
	if err != nil {
		return h.refuse(w, errInvalidRequest.with(err, "%v", err))
	}
	now := h.root.now()
	info := &tus.Info{
		ID:          newID(),
		OwnerHash:   tus.OwnerHash(h.ownerOf(r)),
		Length:      -1,
		MetadataRaw: r.Header.Get("Upload-Metadata"),
		Metadata:    md,
		SentName:    tus.FileName(md),
		Declared:    tus.FileType(md),
		Created:     now,
		Expires:     now.Add(time.Duration(h.ChunkExpiry)),
	}

	concat, err := tus.ParseConcat(r.Header.Get("Upload-Concat"))
	switch {
	case err != nil:
		return h.refuse(w, errInvalidRequest.with(err, "%v", err))
	case concat.Final():
		return h.serveTusConcat(w, r, next, info, concat.Parts)
	}
	info.Partial = concat.Partial

	if v := r.Header.Get("Upload-Length"); v != "" {
		n, ok := tus.ParseSize(v)
		if !ok {
			return h.refuse(w, errInvalidRequest.with(nil, "Upload-Length must be a non-negative integer"))
		}
		info.Length = n
	} else if r.Header.Get("Upload-Defer-Length") != "1" || !defersLength(h.root.data) {
		return h.refuse(w, errTusLengthUnknown)
	}
	if err := h.checkTusLength(info); err != nil {
		return h.refuse(w, err)
	}
	if !info.Partial { // a partial upload is named and checked as part of its final one
		if err := h.checkTusName(info); err != nil {
			return h.refuse(w, err)
		}
	}
	withUpload := r.Header.Get("Content-Type") == tusContentType && r.ContentLength != 0
	if withUpload && info.Length >= 0 && r.ContentLength > info.Length {
		return h.refuse(w, errFileTooLarge.with(errPastLength, "the body is longer than Upload-Length").withFile(info.SentName))
	}

	if err := h.root.data.Create(r.Context(), info.ID); err != nil {
		return h.refuse(w, storeError(err))
	}
	if err := h.states.Save(r.Context(), info); err != nil {
		h.root.removeTus(r.Context(), info.ID)
		return h.refuse(w, storeError(err))
	}
	w.Header().Set("Location", h.tusURL(info.ID))

	if withUpload {
		// creation-with-upload: the body is the first chunk.
		return h.tusWrite(w, r, next, info.ID, 0, http.StatusCreated)
	}
	e, err := h.tusEntry(r, info, nil)
	if err != nil {
		h.root.removeTus(r.Context(), info.ID)
		return h.refuse(w, err)
	}
	e.Leave() // in flight between its requests
	if info.Length == 0 && !info.Partial {
		return h.tusWrite(w, r, next, info.ID, 0, http.StatusCreated)
	}
	w.Header().Set("Upload-Offset", "0")
	setTusExpires(w, info)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// defersLength reports whether a backend takes uploads of deferred length.
func defersLength(d tus.Data) bool {
	_, ok := d.(tus.LengthDeferrer)
	return ok
}

// checkTusLength checks a declared length against the size limits.
func (h *Handler) checkTusLength(info *tus.Info) error {
	if info.Length < 0 {
		return nil
	}
	if h.MaxSize > 0 && info.Length > h.MaxSize {
		return errFileTooLarge.with(nil, "Upload-Length is larger than %d bytes", h.MaxSize).withFile(info.SentName)
	}
	if !info.Partial && info.Length < h.MinSize {
		return errFileTooSmall.with(nil, "Upload-Length is smaller than %d bytes", h.MinSize).withFile(info.SentName)
	}
	return nil
}

// checkTusName sanitises the file name of an upload and checks what can be
// checked before any byte arrives: the conflict policy and, on the name and
// declared type alone, the accepted types.
func (h *Handler) checkTusName(info *tus.Info) error {
	if info.SentName == "" {
		return errInvalidFilename.with(nil, "Upload-Metadata must name the file (filename or name)")
	}
	name, err := names.Sanitize(info.SentName)
	if err != nil {
		return errInvalidFilename.with(err, "%v", err).withFile(info.SentName)
	}
	info.Name = name
	if h.OnConflict == conflictReject && h.root.files.Exists(context.Background(), name) {
		return errFileExists.withFile(info.SentName)
	}
	if err := h.check.CheckName(name, info.Declared); err != nil {
		return checkError(err, info.SentName)
	}
	return nil
}

// tusEntry puts a resumable upload in the progress registry (again, after a
// restart) and returns its entry.
// The request's part ends with Leave or Finish. An id taken by a standard
// upload's X-Progress-ID gives an entry that records nothing, out of its
// way. cancel, when not nil, is how a cancel of the upload stops the
// request.
func (h *Handler) tusEntry(r *http.Request, info *tus.Info, cancel context.CancelCauseFunc) (progress.Upload, error) {
	received := new(atomic.Int64)
	received.Store(info.Offset)
	return h.root.progress.Attach(r.Context(), h.requestKey(r, info.ID),
		progress.Begin{Kind: kindTus, Size: info.Length, Counter: received, Cancel: cancel})
}

// serveTusHead answers HEAD {prefix}/.uploads/{id}: the upload's offset.
func (h *Handler) serveTusHead(w http.ResponseWriter, r *http.Request, id string) error {
	if err := tusPreamble(w, r); err != nil {
		return h.refuse(w, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	if _, err := h.loadOwned(r, id); err != nil {
		return h.refuse(w, tusLoadError(err))
	}
	// A client asks for the offset to resume from: a PATCH still in flight
	// (typically one whose connection died without the server noticing) is
	// stopped, so the offset given counts every byte it received.
	turn, err := h.becomeWriter(w, r, id, 0)
	if err != nil {
		return h.refuse(w, err)
	}
	defer turn.end()
	info, err := h.loadOwned(r, id)
	if err != nil {
		return h.refuse(w, tusLoadError(err))
	}
	if h.expired(info) {
		return h.refuse(w, errTusGone)
	}
	hdr := w.Header()
	hdr.Set("Upload-Offset", strconv.FormatInt(info.Offset, 10))
	if info.Length >= 0 {
		hdr.Set("Upload-Length", strconv.FormatInt(info.Length, 10))
	} else {
		hdr.Set("Upload-Defer-Length", "1")
	}
	if info.MetadataRaw != "" {
		hdr.Set("Upload-Metadata", info.MetadataRaw)
	}
	switch {
	case info.Partial:
		hdr.Set("Upload-Concat", "partial")
	case info.Final:
		hdr.Set("Upload-Concat", "final;"+strings.Join(info.Parts, " "))
	}
	setTusExpires(w, info)
	w.WriteHeader(http.StatusOK)
	return nil
}

// serveTusPatch answers PATCH {prefix}/.uploads/{id}: appends a chunk.
func (h *Handler) serveTusPatch(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, id string) error {
	if err := tusPreamble(w, r); err != nil {
		return h.refuse(w, err)
	}
	if r.Header.Get("Content-Type") != tusContentType {
		return h.refuse(w, errTusContentType)
	}
	offset, ok := tus.ParseSize(r.Header.Get("Upload-Offset"))
	if !ok {
		return h.refuse(w, errInvalidRequest.with(nil, "Upload-Offset must be a non-negative integer"))
	}
	if _, err := h.loadOwned(r, id); err != nil {
		return h.refuse(w, tusLoadError(err))
	}
	return h.tusWrite(w, r, next, id, offset, http.StatusNoContent)
}

// tusWrite appends the request body to upload id at offset, as its one
// writer, and completes the upload when its last byte arrives. It answers
// with status on success.
func (h *Handler) tusWrite(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, id string, offset int64, status int) error {
	turn, err := h.becomeWriter(w, r, id, time.Duration(h.IdleTimeout))
	if err != nil {
		return h.refuse(w, err)
	}
	defer turn.end()
	ctx := turn.ctx

	// Read the state again: the request that had the upload may have moved it.
	info, err := h.loadOwned(r, id)
	if err != nil {
		return h.refuse(w, tusLoadError(err))
	}
	switch {
	case h.expired(info):
		return h.refuse(w, errTusGone)
	case info.Final:
		return h.refuse(w, errTusFinalPatch)
	case offset != info.Offset:
		w.Header().Set("Upload-Offset", strconv.FormatInt(info.Offset, 10))
		return h.refuse(w, errTusOffset.with(nil, "Upload-Offset is %d; the upload is at %d", offset, info.Offset))
	case info.Done:
		return h.tusAnswer(w, info, status)
	}
	if v := r.Header.Get("Upload-Length"); v != "" && info.Length < 0 {
		n, ok := tus.ParseSize(v)
		if !ok || n < info.Offset {
			return h.refuse(w, errInvalidRequest.with(nil, "Upload-Length must be an integer no smaller than the offset"))
		}
		info.Length = n
		if err := h.checkTusLength(info); err != nil {
			h.terminate(r, info, stateError, err)
			return h.refuse(w, err)
		}
		if ld, ok := h.root.data.(tus.LengthDeferrer); ok {
			if err := ld.DeclareLength(r.Context(), id, n); err != nil {
				return h.refuse(w, storeError(err))
			}
		}
	}
	if info.Length >= 0 && r.ContentLength > info.Length-info.Offset {
		return h.refuse(w, errFileTooLarge.with(errPastLength, "the chunk goes past Upload-Length").withFile(info.SentName))
	}
	checksum, err := tus.ParseChecksum(r.Header.Get("Upload-Checksum"))
	if err != nil {
		return h.refuse(w, errInvalidRequest.with(err, "%v", err))
	}

	entry, err := h.tusEntry(r, info, turn.cancel) // a cancel of the upload stops this request
	if err != nil {
		return h.refuse(w, err)
	}
	defer entry.Leave()
	metrics.inFlight.WithLabelValues(kindTus).Inc()
	defer metrics.inFlight.WithLabelValues(kindTus).Dec()
	body := &bodyReader{r: r.Body, ctl: turn.ctl, also: entry.Counter(), declared: r.ContentLength}
	err = h.tusAppend(info, body, checksum, entry.Counter())
	metrics.bytes.WithLabelValues(kindTus).Add(float64(body.n.Load()))
	if err != nil {
		var ue *uploadError
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errCancelled):
			return h.refuse(w, errUploadCancelled)
		case errors.Is(cause, errInterrupted):
			return h.refuse(w, errTusInterrupted)
		case errors.Is(cause, errShuttingDown):
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", "1")
			return h.refuse(w, errTusShutdown)
		case errors.Is(err, errPastLength):
			// The chunk was discarded; a creation's upload is not kept.
			if status == http.StatusCreated {
				h.terminate(r, info, stateError, err)
				w.Header().Del("Location")
			}
		case errors.As(err, &ue) && (ue.Code == errFileTooLarge.Code || ue.Code == errInvalidType.Code):
			// The file can never be accepted: the upload ends here.
			h.terminate(r, info, stateError, err)
			w.Header().Del("Location")
		}
		return h.refuse(w, err)
	}
	if info.Length >= 0 && info.Offset == info.Length {
		if info.Partial {
			// Complete, waiting for its final upload: no longer in flight.
			_ = entry.Finish(r.Context(), progress.End{State: stateDone})
		} else if err := h.tusComplete(r, info); err != nil {
			h.terminate(r, info, stateError, err)
			return h.refuse(w, err)
		} else if answered, err := h.tusAnnounce(w, r, next, info); answered || err != nil {
			return err
		}
	}
	return h.tusAnswer(w, info, status)
}

// tusAnswer answers a successful creation or PATCH.
func (h *Handler) tusAnswer(w http.ResponseWriter, info *tus.Info, status int) error {
	w.Header().Set("Upload-Offset", strconv.FormatInt(info.Offset, 10))
	setTusExpires(w, info)
	w.WriteHeader(status)
	return nil
}

// tusAppend streams body onto the upload's data file from info.Offset,
// saving the state (after flushing the data, with fsync) every
// tusCheckpoint bytes and at the end, so that what info says is on disk.
// With a checksum, nothing is saved until the whole chunk is verified; a
// mismatch discards it. counter, which the body's reads move on, is set
// back to what is kept when a chunk is not.
func (h *Handler) tusAppend(info *tus.Info, body *bodyReader, checksum *tus.Checksum, counter *atomic.Int64) error {
	// Bytes past the saved offset were never confirmed (a crash, a
	// discarded chunk): Append drops them.
	appender, err := h.root.data.Append(context.Background(), info.ID, info.Offset)
	if err != nil {
		return storeError(err)
	}
	f, ok := appender.(*os.File) // the file sink writes local files
	if !ok {
		_ = appender.Close()
		return errors.New("the store's resumable uploads are not local files")
	}
	var fileHash hash.Hash
	if h.Hash == hashSHA256 {
		if fileHash, err = tus.RestoreHash(info); err != nil {
			f.Close()
			return err
		}
	}
	sink := newFileSink(f, fileHash, h.root.appendTo(store.TusData(info.ID)))
	start, saved := info.Offset, *info

	check, err := h.tusCheck(info)
	if err != nil {
		_ = sink.close(false)
		return err
	}

	var src io.Reader = body
	if info.Length >= 0 {
		src = io.LimitReader(body, info.Length-info.Offset)
	} else if h.MaxSize > 0 {
		src = io.LimitReader(body, h.MaxSize-info.Offset+1)
	}
	// A small buffer while the client is slow, a pooled large one while
	// reads fill it (bufpool.Reader).
	in := bufpool.NewReader(src, bufpool.Large)
	defer in.Release()
	sinceSave, checkpointed := int64(0), false
	var readErr error
	for readErr == nil {
		var chunk []byte
		chunk, readErr = in.Next()
		if readErr == io.ErrUnexpectedEOF && body.err == nil {
			readErr = io.EOF // the body ended within this buffer
		}
		n := len(chunk)
		if n == 0 {
			continue
		}
		if err := check.Write(chunk); err != nil {
			_ = sink.close(false)
			return checkError(err, info.SentName)
		}
		info.TypeChecked, info.ContentType = check.Sniffed(), check.ContentType()
		if _, err := sink.Write(chunk); err != nil {
			_ = sink.close(false)
			return storeError(err)
		}
		if checksum != nil {
			checksum.Write(chunk)
		}
		info.Offset += int64(n)
		counter.Store(info.Offset)
		if sinceSave += int64(n); checksum == nil && sinceSave >= tusCheckpoint {
			if err := h.tusSave(sink, info, fileHash); err != nil {
				_ = sink.close(false)
				return err
			}
			sinceSave, checkpointed = 0, true
		}
	}
	if readErr == io.EOF && info.Length >= 0 && info.Offset == info.Length && bodyGoesOn(body) {
		// A body without Content-Length that is longer than the upload:
		// the whole chunk is refused, as a declared one would be.
		*info = saved
		counter.Store(start)
		_ = sink.close(false)
		if checkpointed {
			if err := h.states.Save(context.Background(), info); err != nil {
				return storeError(err)
			}
		}
		return errFileTooLarge.with(errPastLength, "the chunk goes past Upload-Length; it was discarded").withFile(info.SentName)
	}
	if readErr != io.EOF || (checksum != nil && !checksum.OK()) {
		// A cut body keeps what arrived, unless a checksum must vouch for it.
		err := errTusChecksum.withFile(info.SentName)
		if readErr != io.EOF {
			cause := body.err
			if cause == nil {
				cause = readErr
			}
			err = errTusInterrupted.with(cause, "reading the chunk failed (the client stopped sending or went away); what was received is kept")
			if _, ok := errors.AsType[*http.MaxBytesError](cause); ok {
				err = errRequestTooLarge.with(cause, "the chunk is larger than the server accepts in one request")
			}
		}
		if checksum != nil {
			*info = saved
			counter.Store(start)
			_ = sink.close(false)
			return err
		}
		if serr := h.tusSave(sink, info, fileHash); serr != nil {
			_ = sink.close(false)
			return serr
		}
		_ = sink.close(false)
		return err
	}
	if info.Length >= 0 && info.Offset == info.Length {
		// The whole file is here: one shorter than the sniffing window.
		if err := check.Sniff(); err != nil {
			_ = sink.close(false)
			return checkError(err, info.SentName)
		}
		info.TypeChecked, info.ContentType = check.Sniffed(), check.ContentType()
	}
	if err := h.tusSave(sink, info, fileHash); err != nil {
		_ = sink.close(false)
		return err
	}
	if err := sink.close(false); err != nil {
		return storeError(err)
	}
	return nil
}

// bodyGoesOn reports whether body holds another byte once the upload's
// length is reached.
func bodyGoesOn(body *bodyReader) bool {
	var one [1]byte
	for {
		n, err := body.Read(one[:])
		if n > 0 {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// tusSave makes the data durable (with fsync) and then saves the state.
func (h *Handler) tusSave(sink *fileSink, info *tus.Info, fileHash hash.Hash) error {
	if h.fsync {
		if err := sink.sync(); err != nil {
			return storeError(err)
		}
	}
	if err := tus.SaveHash(info, fileHash); err != nil {
		return err
	}
	info.Expires = h.root.now().Add(time.Duration(h.ChunkExpiry))
	return storeError(h.states.Save(context.Background(), info))
}

// tusCheck resumes the checks of an upload's file at its offset: its type
// (from the first bytes on disk, until it is known) and, while its length
// is deferred, max_size. A partial upload's type is checked as part of its
// final upload.
func (h *Handler) tusCheck(info *tus.Info) (*filecheck.Check, error) {
	rules := &h.check
	if info.Length >= 0 {
		// Upload-Length was checked against max_size already; the data
		// never goes past it.
		r := *rules
		r.MaxSize = 0
		rules = &r
	}
	if info.Partial {
		return rules.SizeOnly(info.Offset), nil
	}
	var head []byte
	if !info.TypeChecked {
		head = make([]byte, min(info.Offset, filecheck.SniffLen))
		n, err := h.root.data.ReadHead(context.Background(), info.ID, head)
		if err != nil {
			return nil, storeError(err)
		}
		head = head[:n]
	}
	check, err := rules.Resume(info.Name, info.Declared, info.Offset, head, info.ContentType)
	if err != nil {
		return nil, checkError(err, info.SentName)
	}
	info.TypeChecked, info.ContentType = check.Sniffed(), check.ContentType()
	return check, nil
}

// tusComplete moves a finished upload into place like a standard upload.
func (h *Handler) tusComplete(r *http.Request, info *tus.Info) error {
	if err := h.check.CheckMin(info.Offset); err != nil {
		return checkError(err, info.SentName)
	}
	stored, err := h.publishTus(info, store.TusData(info.ID))
	if err != nil {
		return err
	}
	sf := &tus.File{
		Name: path.Base(stored), Path: stored, URL: h.fileURL(stored), Size: info.Offset, ContentType: info.ContentType,
	}
	if h.Hash == hashSHA256 {
		fh, err := tus.RestoreHash(info)
		if err != nil {
			return err
		}
		sf.SHA256 = hex.EncodeToString(fh.Sum(nil))
	}
	info.Done, info.Stored, info.HashState = true, sf, nil
	if err := h.states.Save(context.Background(), info); err != nil {
		return err
	}
	if h.Mode != modeForward {
		h.tusFinished(r, info, stateDone, nil)
	}
	return nil
}

// tusAnnounce, in forward mode, hands a completed upload to the app. When
// the app refuses it, the upload ends with the app's answer (reported true)
// and its file removed; otherwise the upload is done.
func (h *Handler) tusAnnounce(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, info *tus.Info) (bool, error) {
	if h.Mode != modeForward {
		return false, nil
	}
	refused, err := h.announceTus(w, r, next, info)
	if refused || err != nil {
		h.terminate(r, info, stateError, errAppRefused)
		return true, err
	}
	h.tusFinished(r, info, stateDone, nil)
	return false, nil
}

// tusFinished records the end of a resumable upload: progress and metrics.
func (h *Handler) tusFinished(r *http.Request, info *tus.Info, state string, err error) {
	status, code := 0, ""
	var files []storedFile
	var ue *uploadError
	switch {
	case state == stateDone && info.Stored != nil:
		files = []storedFile{*info.Stored}
	case errors.As(err, &ue):
		status, code = ue.Status, ue.Code
	case err != nil:
		status, code = http.StatusInternalServerError, "internal-error"
	}
	if e, perr := h.tusEntry(r, info, nil); perr == nil {
		_ = e.Finish(r.Context(), progress.End{State: state, Status: status, Code: code, Files: filesJSON(files)})
	} else {
		h.logger.Warn("recording the end of an upload", zap.Error(perr))
	}
	metrics.uploads.WithLabelValues(kindTus, state).Inc()
	metrics.duration.WithLabelValues(kindTus, state).Observe(time.Since(info.Created).Seconds())
}

// terminate removes an upload that ended without a file.
func (h *Handler) terminate(r *http.Request, info *tus.Info, state string, err error) {
	h.root.removeTus(r.Context(), info.ID)
	h.tusFinished(r, info, state, err)
}

// serveTusDelete answers DELETE {prefix}/.uploads/{id} for a resumable
// upload: termination. Only the upload's owner gets that far; a request
// writing to it is then stopped. An upload terminated already, or unknown,
// is not found, as for HEAD.
func (h *Handler) serveTusDelete(w http.ResponseWriter, r *http.Request, id string) error {
	w.Header().Set("Tus-Resumable", tusVersion)
	if v := r.Header.Get("Tus-Resumable"); v != "" && v != tusVersion {
		w.Header().Set("Tus-Version", tusVersion)
		return h.refuse(w, errTusVersion)
	}
	if _, err := h.loadOwned(r, id); err != nil {
		return h.refuse(w, tusLoadError(err))
	}
	// A PATCH in flight is cancelled (wherever it is received, with a
	// shared registry), then the upload is taken over and removed.
	if err := h.cancelTus(r, id); err != nil {
		return h.refuse(w, err)
	}
	turn, err := h.becomeWriter(w, r, id, 0)
	if err != nil {
		return h.refuse(w, err)
	}
	defer turn.end()
	info, err := h.loadOwned(r, id)
	if err != nil {
		return h.refuse(w, tusLoadError(err))
	}
	if info.Done {
		return h.refuse(w, errUploadFinished)
	}
	h.terminate(r, info, stateCancelled, errUploadCancelled)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// cancelTus cancels the requests receiving resumable upload id through the
// progress registry: the one cancel path of both kinds of upload. An
// entry of another kind under the same id (a standard upload's
// X-Progress-ID) is not this upload's and is left alone.
func (h *Handler) cancelTus(r *http.Request, id string) error {
	key := h.requestKey(r, id)
	snap, ok, err := h.root.progress.Lookup(r.Context(), key)
	if err != nil || !ok || snap.Kind != kindTus {
		return err
	}
	if err := h.root.progress.Cancel(r.Context(), key); err != nil &&
		!errors.Is(err, progress.ErrNotFound) && !errors.Is(err, progress.ErrFinished) {
		return err
	}
	return nil
}

// serveTusConcat creates a final upload from finished partial ones
// (concatenation) and stores it at once.
func (h *Handler) serveTusConcat(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, info *tus.Info, urls []string) error {
	info.Final, info.Parts = true, urls
	ids := make([]string, len(urls))
	for i, u := range urls {
		if pu, err := url.Parse(u); err == nil {
			ids[i] = path.Base(pu.Path)
		}
	}
	// Checked once before waiting for the partial uploads (an unfinished
	// one may have a PATCH in flight), and again while they are held: a
	// partial upload that another final upload used or a DELETE
	// terminated meanwhile is refused the same way.
	if _, err := h.loadParts(r, urls, ids); err != nil {
		return h.refuse(w, err)
	}
	letGo, err := h.holdUploads(r, ids)
	if err != nil {
		return h.refuse(w, err)
	}
	defer letGo()
	parts, err := h.loadParts(r, urls, ids)
	if err != nil {
		return h.refuse(w, err)
	}
	info.Length = 0
	for _, p := range parts {
		info.Length += p.Length
	}
	info.Offset = info.Length
	if err := h.checkTusLength(info); err != nil {
		return h.refuse(w, err)
	}
	if err := h.checkTusName(info); err != nil {
		return h.refuse(w, err)
	}

	f, tmp, err := h.root.createTemp()
	if err != nil {
		return h.refuse(w, storeError(err))
	}
	defer h.root.files.RemoveTemp(tmp) // gone already once committed
	if err := h.concatParts(f, info, parts); err != nil {
		return h.refuse(w, err)
	}
	stored, err := h.publishTus(info, tmp)
	if err != nil {
		return h.refuse(w, err)
	}
	info.Stored.Name, info.Stored.Path, info.Stored.URL = path.Base(stored), stored, h.fileURL(stored)
	info.Done = true
	if err := h.states.Save(context.Background(), info); err != nil {
		return h.refuse(w, storeError(err))
	}
	for _, p := range parts {
		h.root.removeTus(r.Context(), p.ID)
	}
	w.Header().Set("Location", h.tusURL(info.ID))
	if h.Mode == modeForward {
		if answered, err := h.tusAnnounce(w, r, next, info); answered || err != nil {
			return err
		}
	} else {
		h.tusFinished(r, info, stateDone, nil)
	}
	w.Header().Set("Upload-Offset", strconv.FormatInt(info.Offset, 10))
	w.WriteHeader(http.StatusCreated)
	return nil
}

// loadParts loads the partial uploads of a final one: each must be a
// finished partial upload of the requester.
func (h *Handler) loadParts(r *http.Request, urls, ids []string) ([]*tus.Info, error) {
	parts := make([]*tus.Info, len(ids))
	for i, id := range ids {
		p, err := h.loadOwned(r, id)
		if err != nil {
			return nil, errInvalidRequest.with(err, "partial upload %q is not found", urls[i])
		}
		if !p.Partial || p.Length < 0 || p.Offset != p.Length {
			return nil, errInvalidRequest.with(nil, "upload %q is not a finished partial upload", urls[i])
		}
		parts[i] = p
	}
	return parts, nil
}

// concatParts writes the partial uploads' data into f, hashing and checking
// the type on the way, and closes f.
func (h *Handler) concatParts(f *os.File, info *tus.Info, parts []*tus.Info) error {
	reader, ok := h.root.data.(tus.Reader)
	if !ok {
		f.Close()
		return errInvalidRequest.with(nil, "this server's store cannot concatenate uploads")
	}
	sink := newFileSink(f, h.newHash(), nil)
	check := h.check.New(info.Name, info.Declared)
	bufp := bufpool.Get(bufpool.Large) // files on disk: no waiting
	defer bufpool.Put(bufp)
	for _, p := range parts {
		pf, err := reader.Open(context.Background(), p.ID)
		if err != nil {
			_ = sink.close(false)
			if errors.Is(err, fs.ErrNotExist) {
				return errInvalidRequest.with(err, "the data of partial upload %s is not found", p.ID)
			}
			return storeError(err)
		}
		for {
			n, rerr := pf.Read(*bufp)
			if n > 0 {
				if err := check.Write((*bufp)[:n]); err != nil {
					pf.Close()
					_ = sink.close(false)
					return checkError(err, info.SentName)
				}
				if _, err := sink.Write((*bufp)[:n]); err != nil {
					pf.Close()
					_ = sink.close(false)
					return storeError(err)
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				pf.Close()
				_ = sink.close(false)
				return storeError(rerr)
			}
		}
		pf.Close()
	}
	if err := check.End(); err != nil {
		_ = sink.close(false)
		return checkError(err, info.SentName)
	}
	info.TypeChecked, info.ContentType = true, check.ContentType()
	if err := sink.close(h.fsync); err != nil {
		return storeError(err)
	}
	info.Stored = &tus.File{Size: info.Length, ContentType: info.ContentType, SHA256: sink.sum()}
	return nil
}
