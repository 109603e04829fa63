package reflexupload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Test sites. A site of reflex_upload directives alone is served by
// handlers provisioned in a test context behind httptest.NewServer, on a
// port of its own, so that its test can run in parallel with others. A
// site that needs a whole Caddy (another directive, such as reverse_proxy
// or encode) is loaded into Caddy's own test harness, one test at a time
// (the harness runs one Caddy in the test process), on loopback ports
// that the process picks free when it first needs them.

// caddyPorts are the loopback ports of the whole-Caddy tests.
type caddyPorts struct{ http, https, admin int }

// wholeCaddy picks the ports of the whole-Caddy tests once per process:
// the harness's Caddy keeps its admin endpoint for the process's life.
var wholeCaddy = sync.OnceValue(func() caddyPorts {
	var p [3]int
	var ls []net.Listener
	for i := range p {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(fmt.Sprintf("picking a free loopback port: %v", err))
		}
		ls = append(ls, l) // held until all are picked: three different ports
		p[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return caddyPorts{http: p[0], https: p[1], admin: p[2]}
})

// caddySiteURL is the site of the whole-Caddy tests.
func caddySiteURL() string { return fmt.Sprintf("http://127.0.0.1:%d", wholeCaddy().http) }

// caddyAdminURL is the admin endpoint of the whole-Caddy tests.
func caddyAdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", wholeCaddy().admin) }

// caddyGlobals is the start of a whole-Caddy test's config: its global
// options (the ports, everything bound to loopback) plus extra ones,
// and the opening of its site block, which the test closes.
func caddyGlobals(extra string) string {
	p := wholeCaddy()
	return fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	auto_https off
%s
}
http://:%d {
`, p.admin, p.http, p.https, extra, p.http)
}

// sites maps a test's name to the base URL of its site.
var sites sync.Map

// siteOf is the base URL of the site the test (or the test it is a
// subtest of) started.
func siteOf(t testing.TB) string {
	for name := t.Name(); ; {
		if v, ok := sites.Load(name); ok {
			return v.(string)
		}
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			return caddySiteURL()
		}
		name = name[:i]
	}
}

// hostOf is the host:port of the test's site.
func hostOf(t testing.TB) string {
	return strings.TrimPrefix(siteOf(t), "http://")
}

// startSite starts a site whose handlers are the given reflex_upload
// directives (ROOT in them is replaced by a fresh upload folder) followed,
// unless they proxy to an app, by a final handler answering "next
// handler", and returns the upload folder.
func startSite(t *testing.T, directives string) string {
	t.Helper()
	root := t.TempDir()
	directives = strings.ReplaceAll(directives, "ROOT", root)
	handlers, ok := parseHandlers(t, directives)
	if !ok {
		startCaddy(t, directives)
		return root
	}
	ctx, cancel := caddy.NewContext(configContext())
	var next caddyhttp.Handler = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		_, err := w.Write([]byte("next handler"))
		return err
	})
	for i := len(handlers) - 1; i >= 0; i-- {
		h := handlers[i]
		if err := h.Provision(ctx); err != nil {
			cancel()
			t.Fatalf("provisioning: %v", err)
		}
		if err := h.Validate(); err != nil {
			cancel()
			t.Fatalf("validating: %v", err)
		}
		next = chain(h, next)
	}
	srv := httptest.NewServer(serveLikeCaddy(next))
	t.Cleanup(func() {
		srv.Close()
		for _, h := range handlers {
			_ = h.Cleanup()
		}
		cancel()
	})
	sites.Store(t.Name(), srv.URL)
	t.Cleanup(func() { sites.Delete(t.Name()) })
	return root
}

// bareConfig is loaded once when no config runs: a handler needs a
// context with a config, whose file systems its file server reads.
var bareConfig sync.Once

// configContext is the context of the running config (the whole-Caddy
// tests load theirs; else a bare one, without admin endpoint).
func configContext() caddy.Context {
	parent := caddy.ActiveContext()
	if parent.FileSystems() != parent.FileSystems() { // no config: a new map each time
		bareConfig.Do(func() {
			_ = caddy.Run(&caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}})
		})
		parent = caddy.ActiveContext()
	}
	return parent
}

// parseHandlers reads a site of reflex_upload directives only; false for
// any other site.
func parseHandlers(t *testing.T, directives string) ([]*Handler, bool) {
	t.Helper()
	if strings.Contains(directives, "reverse_proxy") {
		return nil, false
	}
	d := caddyfile.NewTestDispenser(directives)
	var hs []*Handler
	for d.Next() {
		if d.Val() != "reflex_upload" {
			return nil, false
		}
		d.Prev()
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(d); err != nil {
			t.Fatalf("parsing the site: %v", err)
		}
		hs = append(hs, h)
	}
	return hs, len(hs) > 0
}

// chain makes a middleware handler with its next handler a handler.
func chain(h caddyhttp.MiddlewareHandler, next caddyhttp.Handler) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return h.ServeHTTP(w, r, next)
	})
}

// serveLikeCaddy serves h as Caddy's server does what the module relies
// on: the request's replacer and variables, and a returned error answered
// with its status.
func serveLikeCaddy(h caddyhttp.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repl := caddyhttp.NewTestReplacer(r)
		ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
		ctx = context.WithValue(ctx, caddyhttp.OriginalRequestCtxKey, *r)
		r = r.WithContext(ctx)
		if err := h.ServeHTTP(w, r); err != nil {
			status := http.StatusInternalServerError
			var he caddyhttp.HandlerError
			if errors.As(err, &he) && he.StatusCode != 0 {
				status = he.StatusCode
			}
			w.WriteHeader(status)
		}
	})
}

// startCaddy loads the site into a whole Caddy.
func startCaddy(t *testing.T, directives string) {
	t.Helper()
	fallback := `respond "next handler" 200`
	if strings.Contains(directives, "reverse_proxy") {
		fallback = "" // the app is the next handler
	}
	config := caddyGlobals("\tgrace_period 1s") + fmt.Sprintf("\t%s\n\t%s\n}\n", directives, fallback)
	newTester(t).InitServer(config, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	// The reload closed the connections to the old server; a POST on one of
	// them would fail with EOF (non-idempotent requests are not retried).
	client.CloseIdleConnections()
}

// newTester is Caddy's test harness on the whole-Caddy tests' admin port,
// whose failures stop the test.
func newTester(t *testing.T) *caddytest.Tester {
	t.Helper()
	return caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: wholeCaddy().admin})
}
