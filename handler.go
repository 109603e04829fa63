package reflexupload

import (
	"crypto/sha256"
	"errors"
	"hash"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/names"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// reservedDir is the module's private folder inside the upload root.
const reservedDir = names.Reserved

// ServeHTTP routes the requests under the prefix and passes on the rest.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	rest, ok := h.underPrefix(r.URL.Path)
	if !ok {
		return next.ServeHTTP(w, r)
	}
	w, guard := guardExpect(w, r)
	if guard != nil {
		defer func() { guard.handlerDone(err) }()
	}
	if h.cors(w, r) {
		return nil // a preflight, answered
	}
	switch {
	case (rest == "" || rest == "/") && r.Method == http.MethodPost:
		if h.Mode == modeTrack {
			return h.serveTrack(w, r, next)
		}
		return h.serveUpload(w, r, next)
	case isPrivate(rest):
		return h.servePrivate(w, r, next, rest)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return h.serveFile(w, r, next, rest)
	}
	return next.ServeHTTP(w, r)
}

// servePrivate answers the requests for {prefix}/.uploads and below:
// progress, cancel and the tus protocol. Nothing in the private folder is
// ever served as a file.
func (h *Handler) servePrivate(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, rest string) error {
	method := r.Method
	if o := r.Header.Get("X-HTTP-Method-Override"); o != "" && r.Method == http.MethodPost {
		method = strings.ToUpper(o)
	}
	clean := path.Clean(rest)
	if clean == "/"+reservedDir {
		switch method {
		case http.MethodOptions:
			return h.serveTusOptions(w)
		case http.MethodPost:
			return h.serveTusCreate(w, r, next)
		}
	} else if id, ok := strings.CutPrefix(clean, "/"+reservedDir+"/"); ok && validID.MatchString(id) {
		switch method {
		case http.MethodGet:
			return h.serveProgress(w, r, id)
		case http.MethodHead:
			return h.serveTusHead(w, r, id)
		case http.MethodPatch:
			return h.serveTusPatch(w, r, next, id)
		case http.MethodDelete:
			return h.serveDelete(w, r, id)
		}
	}
	return caddyhttp.Error(http.StatusNotFound, errors.New("no such upload"))
}

// ownerOf evaluates the owner placeholder for a request.
func (h *Handler) ownerOf(r *http.Request) string {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return ""
	}
	return repl.ReplaceAll(h.Owner, "")
}

// underPrefix reports whether p is the prefix or below it, and what follows
// the prefix ("" or "/…").
func (h *Handler) underPrefix(p string) (string, bool) {
	base := strings.TrimSuffix(h.Prefix, "/")
	if !strings.HasPrefix(p, base) {
		return "", false
	}
	rest := p[len(base):]
	if rest != "" && rest[0] != '/' {
		return "", false
	}
	return rest, true
}

// isPrivate reports whether a path below the prefix is in the private folder.
func isPrivate(rest string) bool {
	first, _, _ := strings.Cut(strings.TrimPrefix(path.Clean(rest), "/"), "/")
	return strings.EqualFold(first, reservedDir)
}

// storedFile describes one stored file in the response.
type storedFile = tus.File

// uploadResult is the response to a standard upload.
type uploadResult struct {
	UploadID string              `json:"upload_id"`
	Files    []storedFile        `json:"files"`
	Fields   map[string][]string `json:"fields"`
}

// newHash returns the configured file hash, or nil for none.
func (h *Handler) newHash() hash.Hash {
	if h.Hash == hashSHA256 {
		return sha256.New()
	}
	return nil
}

// fileURL is the URL a stored file is served at.
func (h *Handler) fileURL(stored string) string {
	return strings.TrimSuffix(h.Prefix, "/") + (&url.URL{Path: "/" + stored}).EscapedPath()
}

// newID returns a random 128-bit id in hex.
func newID() string { return tus.NewID() }
