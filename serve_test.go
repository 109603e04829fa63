package reflexupload

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestE2EServeSymlinks: a stored path is served only if it resolves inside
// the root and outside the private folder, whatever symlinks (to files, to
// folders, chains of them) lead there. Everything else answers 404, as a
// missing file does. Files reached through symlinks inside the root keep
// ranges and conditional requests.
func TestE2EServeSymlinks(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	outside := t.TempDir()
	write := func(dir, name, content string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(root, filepath.FromSlash(name))); err != nil {
			t.Fatal(err)
		}
	}
	write(outside, "secret.txt", "outside secret")
	write(root, "photos/a.txt", "photo a")
	write(root, ".uploads/tus/0123456789abcdef0123456789abcdef.json", `{"hash_state":"private"}`)
	write(root, ".uploads/tus/0123456789abcdef0123456789abcdef", "partial data")

	link(filepath.Join(outside, "secret.txt"), "abs-out.txt")
	link("../"+filepath.Base(outside)+"/secret.txt", "rel-out.txt")
	link(outside, "outdir")
	link(".uploads/tus/0123456789abcdef0123456789abcdef.json", "state.json")
	link(".uploads/tus/0123456789abcdef0123456789abcdef", "partial")
	link(".uploads", "priv")
	link("./photos/../.UPLOADS/tus/0123456789abcdef0123456789abcdef", "sneaky")
	link("state.json", "chain-priv")
	link("chain-priv", "chain-priv2")
	link("loop2", "loop1")
	link("loop1", "loop2")
	link("photos/a.txt", "good.txt")
	link("good.txt", "chain-good.txt")
	link(filepath.Join(root, "photos", "a.txt"), "abs-good.txt")
	link("photos", "album")
	link("../photos/a.txt", "photos/up.txt")

	for _, p := range []string{
		"abs-out.txt", "rel-out.txt", "outdir/secret.txt", "state.json", "partial", "priv/tus/0123456789abcdef0123456789abcdef",
		"sneaky", "chain-priv", "chain-priv2", "loop1", "album", "nothing.txt",
	} {
		res, body := get(t, "/_upload/"+p)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d %q; want 404", p, res.StatusCode, body)
		}
	}
	for _, p := range []string{"photos/a.txt", "good.txt", "chain-good.txt", "abs-good.txt", "album/a.txt", "photos/up.txt"} {
		res, body := get(t, "/_upload/"+p)
		if res.StatusCode != http.StatusOK || string(body) != "photo a" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %d %q; want 200 with the file", p, res.StatusCode, body)
		}
	}
	res, body := get(t, "/_upload/album/a.txt", "Range", "bytes=2-4")
	if res.StatusCode != http.StatusPartialContent || string(body) != "oto" {
		t.Fatalf("range through a symlinked folder: %d %q", res.StatusCode, body)
	}
	etag := res.Header.Get("Etag")
	if res, _ := get(t, "/_upload/good.txt", "If-None-Match", etag); etag == "" || res.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match %q through a symlink: %d", etag, res.StatusCode)
	}
}

// TestE2EServeUnknownTypeUnderEncode: with encode in front (which sniffs a
// type when none is set), a stored file with no known extension is served
// as application/octet-stream, never as the sniffed text/html.
func TestE2EServeUnknownTypeUnderEncode(t *testing.T) {
	startSite(t, "encode gzip\nreflex_upload {\nroot ROOT\n}")
	html := bytes.Repeat([]byte("<!DOCTYPE html><html><script>alert(document.cookie)</script></html>\n"), 20)
	res, body := postFiles(t, "/_upload", nil, part{name: "page", data: html}, part{name: "page.html", data: html})
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	for _, tc := range []struct{ path, ctype string }{
		{"/_upload/page", "application/octet-stream"},
		{"/_upload/page.html", "text/html; charset=utf-8"},
	} {
		res, body := get(t, tc.path, "Accept-Encoding", "gzip")
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != tc.ctype ||
			res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Content-Disposition") == "" {
			t.Fatalf("GET %s: %d %v; want 200, %s, nosniff, attachment", tc.path, res.StatusCode, res.Header, tc.ctype)
		}
		if res.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(body, html) {
			t.Fatalf("GET %s: the body is not the stored bytes", tc.path)
		}
	}
}
