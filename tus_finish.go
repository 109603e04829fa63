package reflexupload

import (
	"context"
	"encoding/hex"
	"errors"
	"go.uber.org/zap"
	"net/http"
	"path"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// tusComplete moves a finished upload into place like a standard upload.
func (h *Handler) tusComplete(r *http.Request, info *tus.Info) error {
	if err := h.check.CheckMin(info.Offset); err != nil {
		return checkError(err, info.SentName)
	}
	stored, err := h.publishTus(info, h.root.stored.TusFile(info.ID))
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
