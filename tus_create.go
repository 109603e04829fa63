package reflexupload

import (
	"context"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/names"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

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

	if err := h.createTusData(r.Context(), info); err != nil {
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

// createTusData makes the empty data of a new upload. Under overwrite and
// reject it is published under its name or not at all, so a store that
// can keep its data there (S3: completed in place, not copied) is told.
func (h *Handler) createTusData(ctx context.Context, info *tus.Info) error {
	if named, ok := h.root.data.(tus.NamedData); ok && !info.Partial && h.OnConflict != conflictRename {
		return named.CreateAs(ctx, info.ID, info.Name)
	}
	return h.root.data.Create(ctx, info.ID)
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
