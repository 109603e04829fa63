package reflexupload

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Errors of progress and cancel requests.
var (
	errUploadCancelled = &uploadError{Status: http.StatusConflict, Code: "upload-cancelled", Detail: "the upload was cancelled"}
	errUploadNotFound  = &uploadError{Status: http.StatusNotFound, Code: "upload-not-found", Detail: "no upload in flight has this id"}
	errUploadFinished  = &uploadError{Status: http.StatusConflict, Code: "upload-finished", Detail: "the upload has finished already"}
	errUploadIDInUse   = &uploadError{Status: http.StatusConflict, Code: "upload-id-in-use", Detail: "an upload with this id is in flight"}
	errInvalidUploadID = &uploadError{Status: http.StatusBadRequest, Code: "invalid-request", Detail: "upload id must be 1 to 128 letters, digits, _ or -"}
)

// serveCancel answers DELETE {prefix}/.uploads/{id}: it ends an upload that
// is still being received. The upload's body read is stopped at once (its
// read deadline is set to now), without waiting for the client to send
// more; the upload then removes its temp files and answers its client with
// 409 upload-cancelled.
func (h *Handler) serveCancel(w http.ResponseWriter, r *http.Request, id string) error {
	e := h.root.progress.lookup(h.requestKey(r, id))
	switch {
	case e == nil:
		return h.refuse(w, errUploadNotFound)
	case e.snapshotState() != stateUploading:
		return h.refuse(w, errUploadFinished)
	}
	e.cancel(errCancelled)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// cancellable makes the context of an upload request cancellable with a
// cause, and arranges that cancelling it also unblocks a body read in
// progress, the way tusd stops an interrupted PATCH. The returned stop
// function must be called when the upload ends.
func cancellable(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelCauseFunc, func()) {
	ctx, cancel := context.WithCancelCause(r.Context())
	rc := http.NewResponseController(w)
	stopAfter := context.AfterFunc(ctx, func() {
		if errors.Is(context.Cause(ctx), errCancelled) {
			_ = rc.SetReadDeadline(time.Now())
		}
	})
	return ctx, cancel, func() {
		stopAfter()
		cancel(nil)
	}
}
