package reflexupload

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"strconv"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

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

	f, err := h.root.files.CreateTemp(r.Context())
	if err != nil {
		return h.refuse(w, storeError(err))
	}
	tmp := f.Name()
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
