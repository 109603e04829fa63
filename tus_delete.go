package reflexupload

import (
	"errors"
	"net/http"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

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
	// A PATCH in flight is cancelled (wherever it is received, with a
	// shared registry), then the upload is taken over and removed.
	info, turn, err := h.takeUpload(w, r, id, func() error { return h.cancelTus(r, id) })
	if err != nil {
		return h.refuse(w, err)
	}
	defer turn.end()
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
