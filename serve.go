package reflexupload

import (
	"io"
	"mime"
	"net/http"
	"path"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
)

// serveFile serves a stored file through Caddy's file server (ranges, ETag,
// conditional requests), with headers that keep an uploaded file from
// running in the site's origin.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, rest string) error {
	r2 := r.Clone(r.Context())
	r2.URL.Path = rest
	r2.URL.RawPath = ""
	w.Header().Set("X-Content-Type-Options", "nosniff")
	return h.files.ServeHTTP(&attachmentWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		name:                  path.Base(rest),
	}, r2, next)
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
		if filecheck.BareType(hdr.Get("Content-Type")) != "application/pdf" {
			disp := mime.FormatMediaType("attachment", map[string]string{"filename": w.name})
			if disp == "" {
				disp = "attachment"
			}
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
