package reflexupload

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The request headers that tus clients and Reflex's frontend send, allowed
// in a preflight, and the response headers a cross-origin client must read.
const (
	corsAllowMethods  = "POST, GET, HEAD, PATCH, DELETE, OPTIONS"
	corsAllowHeaders  = "Content-Type, Tus-Resumable, Upload-Length, Upload-Defer-Length, Upload-Metadata, Upload-Offset, Upload-Checksum, Upload-Concat, X-HTTP-Method-Override, X-Progress-ID, X-Requested-With, Reflex-Client-Token, Reflex-Event-Handler"
	corsExposeHeaders = "Location, Upload-Offset, Upload-Length, Upload-Defer-Length, Upload-Metadata, Upload-Concat, Upload-Expires, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"
	corsMaxAge        = "600"
)

// checkOrigin checks a cors_origins entry: "*" or scheme://host[:port].
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin (scheme://host[:port]) or *", o)
	}
	return nil
}

// corsAllowed reports whether an Origin may make cross-origin requests.
func (h *Handler) corsAllowed(origin string) bool {
	if origin == "" {
		return false
	}
	return slices.ContainsFunc(h.CORSOrigins, func(o string) bool {
		return o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin)
	})
}

// cors adds the CORS headers for a request from an allowed origin and
// answers its preflight. It reports whether the request has been answered.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) bool {
	if len(h.CORSOrigins) == 0 {
		return false
	}
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	hdr := w.Header()
	hdr.Add("Vary", "Origin")
	if !h.corsAllowed(origin) {
		if preflight {
			w.WriteHeader(http.StatusForbidden)
			return true
		}
		return false
	}
	if slices.Contains(h.CORSOrigins, "*") && !h.CORSCredentials {
		hdr.Set("Access-Control-Allow-Origin", "*")
	} else {
		hdr.Set("Access-Control-Allow-Origin", origin)
	}
	if h.CORSCredentials {
		hdr.Set("Access-Control-Allow-Credentials", "true")
	}
	if !preflight {
		hdr.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		return false
	}
	allow := corsAllowHeaders
	if extra := r.Header.Get("Access-Control-Request-Headers"); extra != "" {
		// Reflex apps may send headers of their own with an upload; the
		// origin is trusted, so what it asks for is allowed.
		allow += ", " + extra
	}
	hdr.Set("Access-Control-Allow-Methods", corsAllowMethods)
	hdr.Set("Access-Control-Allow-Headers", allow)
	hdr.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}
