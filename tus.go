package reflexupload

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
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
	if errors.Is(err, tus.ErrLost) {
		return errUploadNotFound.with(err, "the upload's data was lost; start it again")
	}
	return storeError(err)
}

// expired reports whether an unfinished upload is past its expiry.
func (h *Handler) expired(info *tus.Info) bool {
	return info.Expired(h.root.now())
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

// tusAnswer answers a successful creation or PATCH.
func (h *Handler) tusAnswer(w http.ResponseWriter, info *tus.Info, status int) error {
	w.Header().Set("Upload-Offset", strconv.FormatInt(info.Offset, 10))
	setTusExpires(w, info)
	w.WriteHeader(status)
	return nil
}
