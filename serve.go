package reflexupload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
)

// serveFile serves a stored file through Caddy's file server (ranges, ETag,
// conditional requests), with headers that keep an uploaded file from
// running in the site's origin; or, when the storage redirects, with a
// redirect to the store.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, rest string) error {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if h.redirect > 0 {
		return h.redirectFile(w, r, rest)
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = rest
	r2.URL.RawPath = ""
	return h.files.ServeHTTP(&attachmentWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		name:                  path.Base(rest),
	}, r2, next)
}

// redirectStorage is a storage module whose files may be served by a
// redirect to the store (storage s3's redirect option).
type redirectStorage interface {
	// redirectTTL is how long a redirect's URL is valid; 0 means files
	// are served through Caddy.
	redirectTTL() time.Duration
}

// presigner is an open storage that makes URLs of the store that serve a
// stored file without credentials for a while.
type presigner interface {
	// presignFile returns a URL that answers method (GET or HEAD) for the
	// stored file name for ttl, with these Content-Type and
	// Content-Disposition, once it has checked that the file exists. A
	// name that is not a stored file (missing, a folder, private) is
	// fs.ErrNotExist.
	presignFile(ctx context.Context, method, name string, ttl time.Duration, ctype, disposition string) (string, error)
}

// provisionRedirect reads the redirect option of the handler's storage
// module, whose upload root must make presigned URLs.
func (h *Handler) provisionRedirect(storage Storage) error {
	rs, ok := storage.(redirectStorage)
	if !ok || rs.redirectTTL() == 0 {
		return nil
	}
	p, ok := h.root.stored.(presigner)
	if !ok {
		return fmt.Errorf("redirect: the storage of root %q (opened by another handler) cannot make presigned URLs", h.Root)
	}
	h.redirect, h.presigner = rs.redirectTTL(), p
	return nil
}

// redirectFile answers a GET or HEAD of a stored file with a 307 to a
// presigned URL of the store, valid for h.redirect, whose answer has the
// type and disposition the file server's would have. Only a stored file is
// redirected, under the file server's rules: the path is cleaned and kept
// below the root, the private folder is hidden (at any depth, as the file
// server hides it in a bucket), and a folder or a missing file is a 404
// (the presigner checks that the object exists).
func (h *Handler) redirectFile(w http.ResponseWriter, r *http.Request, rest string) error {
	name := strings.TrimSuffix(filepath.ToSlash(caddyhttp.SanitizedPathJoin(h.root.files.ServeRoot(), rest)), "/")
	for c := range strings.SplitSeq(name, "/") {
		if strings.EqualFold(c, reservedDir) {
			return caddyhttp.Error(http.StatusNotFound, errors.New("no such file"))
		}
	}
	base := path.Base(name)
	ctype := servedType(base)
	u, err := h.presigner.presignFile(r.Context(), r.Method, name, h.redirect, ctype, dispositionOf(ctype, base))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return caddyhttp.Error(http.StatusNotFound, err)
	case errors.Is(err, fs.ErrInvalid):
		return caddyhttp.Error(http.StatusBadRequest, err)
	case err != nil:
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	hdr := w.Header()
	hdr.Set("Location", u)
	hdr.Set("Cache-Control", "private, no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
	return nil
}

// servedType is the Content-Type of a stored file as the file server sends
// it: from the name's extension, else application/octet-stream (never
// sniffed).
func servedType(name string) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// dispositionOf is the Content-Disposition of a stored file of type ctype:
// attachment, named, unless the type is exactly application/pdf (Reflex's
// rule), which gets none.
func dispositionOf(ctype, name string) string {
	if filecheck.BareType(ctype) == "application/pdf" {
		return ""
	}
	if disp := mime.FormatMediaType("attachment", map[string]string{"filename": name}); disp != "" {
		return disp
	}
	return "attachment"
}

// attachmentWriter adds Content-Disposition: attachment to a file response
// unless its type is exactly application/pdf (Reflex's rule), deciding when
// the file server has set the type and writes the header.
type attachmentWriter struct {
	*caddyhttp.ResponseWriterWrapper
	name        string
	wroteHeader bool
}

func (w *attachmentWriter) WriteHeader(status int) {
	if !w.wroteHeader && status >= http.StatusOK {
		w.wroteHeader = true
		hdr := w.Header()
		if status < http.StatusMultipleChoices && hdr.Get("Content-Type") == "" {
			// The file server sends no type for an unknown extension, and
			// an encode handler in front would then sniff one (text/html
			// for an HTML file named "page"): the bytes are just bytes.
			hdr.Set("Content-Type", "application/octet-stream")
		}
		if disp := dispositionOf(hdr.Get("Content-Type"), w.name); disp != "" {
			hdr.Set("Content-Disposition", disp)
		}
	}
	w.ResponseWriterWrapper.WriteHeader(status)
}

func (w *attachmentWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.Write(p)
}

func (w *attachmentWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.ReadFrom(r)
}
