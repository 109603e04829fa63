package reflexupload

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/store"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// statusRange is a range of HTTP statuses, from a code ("409") or a class
// ("4xx").
type statusRange struct{ lo, hi int }

func parseStatusRanges(specs []string) ([]statusRange, error) {
	var out []statusRange
	for _, s := range specs {
		if len(s) == 3 && s[1:] == "xx" && s[0] >= '1' && s[0] <= '5' {
			lo := int(s[0]-'0') * 100
			out = append(out, statusRange{lo, lo + 99})
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 || n > 599 {
			return nil, fmt.Errorf("%q is not a status code (100-599) or class (4xx)", s)
		}
		out = append(out, statusRange{n, n})
	}
	return out, nil
}

// appRefused reports whether the app's status is a refusal.
func (h *Handler) appRefused(status int) bool {
	for _, r := range h.failStatus {
		if r.lo <= status && status <= r.hi {
			return true
		}
	}
	return false
}

// statusWriter passes a response through and remembers its status. When
// drop says so at the moment the header is written (the module has already
// decided how the request ends), the response is dropped instead, so the
// module can answer itself.
type statusWriter struct {
	*caddyhttp.ResponseWriterWrapper
	drop    func() bool
	status  int
	dropped bool
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 && status >= http.StatusOK {
		if w.drop != nil && w.drop() {
			w.dropped = true
			return
		}
		w.status = status
	}
	if !w.dropped {
		w.ResponseWriterWrapper.WriteHeader(status)
	}
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 && !w.dropped {
		w.WriteHeader(http.StatusOK)
	}
	if w.dropped {
		return len(p), nil
	}
	return w.ResponseWriterWrapper.Write(p)
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 && !w.dropped {
		w.WriteHeader(http.StatusOK)
	}
	if w.dropped {
		return io.Copy(io.Discard, r)
	}
	return w.ResponseWriterWrapper.ReadFrom(r)
}

// appRequest is the request the app gets in forward mode: r's method, URL
// and headers, with the JSON of the stored files as its body.
func appRequest(r *http.Request, meta uploadResult) *http.Request {
	var body bytes.Buffer
	_ = meta.writeJSON(&body) // a bytes.Buffer takes every write
	r2 := r.Clone(r.Context())
	r2.ContentLength = int64(body.Len())
	r2.Body = io.NopCloser(&body)
	r2.TransferEncoding = nil
	r2.Header.Set("Content-Type", "application/json")
	r2.Header.Set("X-Upload-ID", meta.UploadID)
	r2.Header.Del("Content-Length")
	r2.Header.Del("Expect")
	r2.Trailer = nil
	return r2
}

// forward hands a stored upload's metadata to the next handler and passes
// its answer back unchanged. A refusal (forward_fail_status) or an error
// undoes what the request stored: its files are removed and the files they
// replaced come back. It returns the app's status.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, meta uploadResult, placed store.Publisher) (int, error) {
	sw := &statusWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	err := next.ServeHTTP(sw, appRequest(r, meta))
	status := sw.status
	if err != nil {
		status = http.StatusBadGateway
		if he, ok := err.(caddyhttp.HandlerError); ok && he.StatusCode != 0 {
			status = he.StatusCode
		}
	}
	if err != nil || h.appRefused(status) {
		placed.Undo()
	} else {
		placed.Keep()
	}
	return status, err
}

// publishTus moves the file of a finished resumable upload into place,
// under the conflict policy, as a batch of one. In forward mode the batch is
// held until the app has answered (announceTus), so that a refusal can give
// back the file it replaced.
func (h *Handler) publishTus(info *tus.Info, tmp string) (string, error) {
	b := h.root.files.NewBatch(store.Policy(h.OnConflict), h.fsync)
	if _, err := b.Plan([]string{info.Name}); err != nil {
		return "", conflictError(err, info.SentName)
	}
	stored, err := b.Put(0, tmp)
	if err != nil {
		b.Undo()
		return "", conflictError(err, info.SentName)
	}
	if h.Mode == modeForward {
		h.root.hold(info.ID, b)
	} else {
		b.Keep()
	}
	return stored, nil
}

// announceTus tells the app, in forward mode, of a completed resumable
// upload: a POST to {prefix} with the JSON of the stored file, as for a
// standard upload. A refusal takes the file back (the one it replaced
// returns, see publishTus); the app's answer is then what the client of the
// completing request gets, and announceTus reports true.
func (h *Handler) announceTus(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, info *tus.Info) (bool, error) {
	fields := map[string][]string{}
	for k, v := range info.Metadata {
		fields[k] = []string{v}
	}
	meta := uploadResult{UploadID: info.ID, Files: []storedFile{*info.Stored}, Fields: fields}
	r2 := appRequest(r, meta)
	r2.Method = http.MethodPost
	r2.URL.Path, r2.URL.RawPath = strings.TrimSuffix(h.Prefix, "/"), ""
	for _, k := range []string{"Tus-Resumable", "Upload-Offset", "Upload-Length", "Upload-Checksum", "Upload-Concat",
		"Upload-Metadata", "Upload-Defer-Length", "X-Http-Method-Override"} {
		r2.Header.Del(k)
	}
	rec := caddyhttp.NewResponseRecorder(w, new(bytes.Buffer), func(int, http.Header) bool { return true })
	err := next.ServeHTTP(rec, r2)
	status := rec.Status()
	placed := h.root.unhold(info.ID)
	if err == nil && !h.appRefused(status) {
		placed.Keep()
		return false, nil
	}
	placed.Undo()
	if err != nil {
		return true, err
	}
	w.Header().Del("Upload-Offset")
	w.Header().Del("Upload-Expires")
	return true, rec.WriteResponse()
}
