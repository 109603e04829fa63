package reflexupload

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// startUpload puts an upload in the progress registry, makes its request
// cancellable and counts it in flight. release undoes the last two.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, id, kind string, body *bodyReader) (context.Context, progress.Upload, func(), error) {
	ctx, cancel, ctl, release := cancellable(w, r, time.Duration(h.IdleTimeout))
	body.ctl = ctl
	size := r.ContentLength
	if size < 0 {
		size = -1
	}
	entry, err := h.root.progress.Start(r.Context(), h.requestKey(r, id),
		progress.Begin{Kind: kind, Size: size, Counter: &body.n, Cancel: cancel})
	if err != nil {
		release()
		if errors.Is(err, progress.ErrIDInUse) {
			err = errUploadIDInUse
		}
		return nil, nil, nil, err
	}
	metrics.inFlight.WithLabelValues(kind).Inc()
	return ctx, entry, func() {
		metrics.inFlight.WithLabelValues(kind).Dec()
		release()
	}, nil
}

// finish records how an upload ended: progress, metrics and placeholders.
func (h *Handler) finish(r *http.Request, entry progress.Upload, body *bodyReader, files []storedFile, err error, began time.Time) {
	state, status, code := stateDone, 0, ""
	var ue *uploadError
	switch {
	case err == nil:
	case errors.Is(err, errUploadCancelled):
		state, status, code = stateCancelled, errUploadCancelled.Status, errUploadCancelled.Code
	case errors.As(err, &ue):
		state, status, code = stateError, ue.Status, ue.Code
	default:
		state, status, code = stateError, http.StatusInternalServerError, "internal-error"
	}
	if err != nil {
		files = nil
	}
	if ferr := entry.Finish(r.Context(), progress.End{State: state, Status: status, Code: code, Files: filesJSON(files)}); ferr != nil {
		h.logger.Warn("recording the end of an upload", zap.Error(ferr))
	}

	received := body.n.Load()
	kind := entry.Kind()
	metrics.uploads.WithLabelValues(kind, state).Inc()
	metrics.bytes.WithLabelValues(kind).Add(float64(received))
	metrics.duration.WithLabelValues(kind, state).Observe(time.Since(began).Seconds())

	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.reflex_upload.id", entry.Key().ID)
		repl.Set("http.reflex_upload.files", len(files))
		repl.Set("http.reflex_upload.bytes", received)
		repl.Set("http.reflex_upload.state", state)
	}
}

// refuse answers a client error as JSON, or returns an internal error for
// Caddy to answer and log.
func (h *Handler) refuse(w http.ResponseWriter, err error) error {
	var ue *uploadError
	if errors.As(err, &ue) {
		if ue.Status == http.StatusServiceUnavailable {
			// Not the client's fault: the operator should know.
			h.logger.Warn("upload refused: server busy", zap.String("code", ue.Code), zap.Error(ue.err))
		} else if c := h.logger.Check(zap.DebugLevel, "upload refused"); c != nil {
			c.Write(zap.String("code", ue.Code), zap.String("file", ue.File), zap.Error(ue.err))
		}
		writeError(w, ue)
		return nil
	}
	return caddyhttp.Error(http.StatusInternalServerError, err)
}

// checkError turns a file's refusal by its checks into the client's
// answer, naming the file as sent.
func checkError(err error, sent string) error {
	var fe *filecheck.Error
	if !errors.As(err, &fe) {
		return err
	}
	switch fe.Kind {
	case filecheck.ErrTooLarge:
		return errFileTooLarge.with(nil, "%v", fe).withFile(sent)
	case filecheck.ErrTooSmall:
		return errFileTooSmall.with(nil, "%v", fe).withFile(sent)
	}
	return errInvalidType.with(fe.Unwrap(), "%v", fe).withFile(sent)
}

// conflictError names the file of a failure to put it in place, when the
// failure is the client's (its name is taken).
func conflictError(err error, sent string) error {
	err = storeError(err)
	var ue *uploadError
	if errors.As(err, &ue) {
		return ue.withFile(sent)
	}
	return err
}
