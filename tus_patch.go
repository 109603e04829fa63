package reflexupload

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

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
		case errors.Is(err, tus.ErrLost):
			// Its bytes are not all there any more: the client starts again.
			h.terminate(r, info, stateError, err)
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
