package reflexupload

import (
	"net/http"
	"strconv"
	"strings"
)

// serveTusHead answers HEAD {prefix}/.uploads/{id}: the upload's offset.
func (h *Handler) serveTusHead(w http.ResponseWriter, r *http.Request, id string) error {
	if err := tusPreamble(w, r); err != nil {
		return h.refuse(w, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	// A client asks for the offset to resume from: a PATCH still in flight
	// (typically one whose connection died without the server noticing) is
	// stopped, so the offset given counts every byte it received.
	info, turn, err := h.takeUpload(w, r, id, nil)
	if err != nil {
		return h.refuse(w, err)
	}
	defer turn.end()
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
