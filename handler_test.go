package reflexupload

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// serveHandler provisions h in a test context and serves it on a random
// loopback port, with next as the handler after it (a 418 when nil). It
// returns the server's URL. Serving stored files needs a whole Caddy (the
// file server reads through the config's file systems): use startSite.
func serveHandler(t *testing.T, h *Handler, next caddyhttp.HandlerFunc) string {
	t.Helper()
	if h.Root == "" {
		h.Root = t.TempDir()
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	h.logger = zap.NewNop() // refusals are the point of these tests, not news
	t.Cleanup(func() { _ = h.Cleanup() })
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if next == nil {
		next = func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(http.StatusTeapot)
			return nil
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
		if err := h.ServeHTTP(w, r, next); err != nil {
			status := http.StatusInternalServerError
			if he, ok := err.(caddyhttp.HandlerError); ok && he.StatusCode != 0 {
				status = he.StatusCode
			}
			w.WriteHeader(status)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// postTo posts parts as multipart/form-data to url.
func postTo(t *testing.T, url string, header http.Header, parts ...part) (*http.Response, []byte) {
	t.Helper()
	body, ctype := multipartBody(t, parts...)
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	for k, v := range header {
		req.Header[k] = v
	}
	return do(t, req)
}

// tree describes everything under a folder but the private one: each path
// (slash-separated, relative) with "dir", or "file:" and its content.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".":
		case rel == reservedDir:
			return fs.SkipDir
		case d.IsDir():
			out[rel] = "dir"
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = "file:" + string(b)
		default:
			out[rel] = "other:" + d.Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertTree fails unless the tree under root is want.
func assertTree(t *testing.T, root string, want map[string]string) {
	t.Helper()
	got := tree(t, root)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the root holds\n%v\nwant\n%v", got, want)
	}
}

// assertNoTemps fails unless the private folder holds nothing but the
// resumable uploads' folder: no temp file, no file set aside.
func assertNoTemps(t *testing.T, root string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, reservedDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "tus" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("left in the private folder: %q", names)
	}
}

// assertAnswer fails unless the answer has the status and, as JSON, the body
// want (compared as written, after the final newline).
func assertAnswer(t *testing.T, res *http.Response, body []byte, status int, want string) {
	t.Helper()
	if res.StatusCode != status || strings.TrimSuffix(string(body), "\n") != want {
		t.Fatalf("answer %d %s\nwant %d %s", res.StatusCode, body, status, want)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
}

// TestFieldsBounded: the text fields of one request are bounded in all
// (max_fields_size, 4 MiB by default), refused with 413 fields-too-large,
// and a request within the bound gets its fields back as they were sent.
func TestFieldsBounded(t *testing.T) {
	t.Parallel()
	mib := strings.Repeat("x", 1<<20-10)
	t.Run("default", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		url := serveHandler(t, &Handler{Root: root}, nil)
		parts := []part{{name: "a.txt", data: []byte("a")}}
		for i := range 5 {
			parts = append(parts, part{field: fmt.Sprint("f", i), value: mib})
		}
		res, body := postTo(t, url+"/_upload", nil, parts...)
		assertAnswer(t, res, body, http.StatusRequestEntityTooLarge,
			`{"detail":"the text fields are larger than 4194304 bytes in all","code":"fields-too-large"}`)
		assertTree(t, root, map[string]string{})
		assertNoTemps(t, root)
		// Four of them fit.
		res, body = postTo(t, url+"/_upload", nil, parts[:5]...)
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("four fields of 1 MiB: %d %.200s", res.StatusCode, body)
		}
	})
	t.Run("option", func(t *testing.T) {
		t.Parallel()
		url := serveHandler(t, &Handler{MaxFieldsSize: 10}, nil)
		res, body := postTo(t, url+"/_upload", http.Header{"X-Progress-Id": {"f1"}},
			part{field: "a", value: "12"}, part{field: "b", value: "<&>"}, part{field: "a", value: ""})
		assertAnswer(t, res, body, http.StatusCreated, `{"upload_id":"f1","files":[],"fields":{"a":["12",""],"b":["\u003c\u0026\u003e"]}}`)
		for _, parts := range [][]part{
			{{field: "a", value: "12"}, {field: "b", value: "<&>"}, {field: "c", value: "xyz"}},
			{{field: "a", value: "12"}, {field: "b", value: "<&>"}, {field: "long-name"}}, // names count too
		} {
			res, body = postTo(t, url+"/_upload", nil, parts...)
			assertAnswer(t, res, body, http.StatusRequestEntityTooLarge,
				`{"detail":"the text fields are larger than 10 bytes in all","code":"fields-too-large"}`)
		}
	})
}

// TestFieldsMemory sends 64 text fields of 1 MiB: the request is refused
// once the fields pass 4 MiB, and handling it allocates a bounded amount,
// not a few copies of every field. Not parallel: it reads the process's
// allocation counter.
func TestFieldsMemory(t *testing.T) {
	url := serveHandler(t, &Handler{}, nil)
	mib := strings.Repeat("x", 1<<20-10)
	parts := make([]part, 64)
	for i := range parts {
		parts[i] = part{field: fmt.Sprint("f", i), value: mib}
	}
	body, ctype := multipartBody(t, parts...)
	req, err := http.NewRequest(http.MethodPost, url+"/_upload", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, answer := do(t, req)
	runtime.ReadMemStats(&after)
	assertAnswer(t, res, answer, http.StatusRequestEntityTooLarge,
		`{"detail":"the text fields are larger than 4194304 bytes in all","code":"fields-too-large"}`)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d MiB for a request of %d MiB of fields", allocated>>20, len(parts))
	if allocated > 24<<20 {
		t.Fatalf("allocated %d MiB for the request; want at most 24 MiB", allocated>>20)
	}
}

// TestReflexNames: Reflex's rules for what its frontend sends. A backslash
// in a file name is a separator (browsers send it as it is, unescaped), and
// an empty __reflex_event_args means no arguments.
func TestReflexNames(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	url := serveHandler(t, &Handler{Root: root}, nil)
	reflex := http.Header{"Reflex-Client-Token": {"tok"}, "Reflex-Event-Handler": {"state.handle_upload"}}
	res, body := postTo(t, url+"/_upload", reflex,
		part{field: reflexArgsField, value: ""},
		part{name: "x", disposition: `form-data; name="files"; filename="back\(1).png"`, data: []byte("b")},
		part{name: "x", disposition: `form-data; name="files"; filename="dir\sub\a b.txt"`, data: []byte("a")},
		part{name: "x", disposition: `form-data; name="files"; filename="q\"uote\\d.txt"`, data: []byte("q")},
	)
	if res.StatusCode != http.StatusOK || string(body) != "{}\n" {
		t.Fatalf("answer %d %q; want 200 {}", res.StatusCode, body)
	}
	assertTree(t, root, map[string]string{
		"back": "dir", "back/(1).png": "file:b",
		"dir": "dir", "dir/sub": "dir", "dir/sub/a b.txt": "file:a",
		`q"uote`: "dir", `q"uote/d.txt`: "file:q",
	})
	if _, err := os.Stat(filepath.Join(root, "back(1).png")); !os.IsNotExist(err) {
		t.Fatalf("back(1).png: %v", err)
	}
	// Not empty: still a JSON object or nothing.
	res, body = postTo(t, url+"/_upload", reflex, part{field: reflexArgsField, value: " "}, part{name: "c.txt", data: []byte("c")})
	assertAnswer(t, res, body, http.StatusBadRequest, `{"detail":"__reflex_event_args must be a JSON object","code":"invalid-request"}`)
}
