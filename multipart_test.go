package reflexupload

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// One site with an upload endpoint per limit, each with its own folder.
const limitSite = `
reflex_upload {
	root ROOT/size
	prefix /size
	max_size 1000
	min_size 10
}
reflex_upload {
	root ROOT/req
	prefix /req
	max_request_size 4000
}
reflex_upload {
	root ROOT/files
	prefix /files
	max_files 2
}
reflex_upload {
	root ROOT/images
	prefix /images
	accept image/*
}
reflex_upload {
	root ROOT/pdf
	prefix /pdf
	accept .pdf
}
`

func TestE2ELimits(t *testing.T) {
	t.Parallel()
	root := startSite(t, limitSite)
	small := bytes.Repeat([]byte("x"), 500)
	for _, tc := range []struct {
		name   string
		path   string
		parts  []part
		status int
		code   string
		file   string
	}{
		{name: "file over max_size", path: "/size", parts: []part{{name: "ok.bin", data: small}, {name: "big.bin", data: make([]byte, 1001)}},
			status: 413, code: "file-too-large", file: "big.bin"},
		{name: "file under min_size", path: "/size", parts: []part{{name: "ok.bin", data: small}, {name: "tiny.bin", data: []byte("123456789")}},
			status: 422, code: "file-too-small", file: "tiny.bin"},
		{name: "request over max_request_size", path: "/req", parts: []part{{name: "a.bin", data: make([]byte, 3000)}, {name: "b.bin", data: make([]byte, 3000)}},
			status: 413, code: "request-too-large"},
		{name: "too many files", path: "/files", parts: []part{{name: "1.bin", data: small}, {name: "2.bin", data: small}, {name: "3.bin", data: small}},
			status: 422, code: "too-many-files", file: "3.bin"},
		{name: "html renamed png", path: "/images", parts: []part{{name: "cat.png", ctype: "image/png", data: []byte("<!DOCTYPE html><html><script>alert(1)</script></html>")}},
			status: 415, code: "file-invalid-type", file: "cat.png"},
		{name: "png declared as html", path: "/images", parts: []part{{name: "cat.png", ctype: "text/html", data: pngBytes()}},
			status: 415, code: "file-invalid-type", file: "cat.png"},
		{name: "png named html", path: "/images", parts: []part{{name: "cat.html", ctype: "image/png", data: pngBytes()}},
			status: 415, code: "file-invalid-type", file: "cat.html"},
		{name: "text named pdf", path: "/pdf", parts: []part{{name: "doc.pdf", data: []byte("just text, no %PDF header")}},
			status: 415, code: "file-invalid-type", file: "doc.pdf"},
		{name: "traversal name refused when empty", path: "/size", parts: []part{{name: "ok.bin", data: small}, {name: "../..", data: small}},
			status: 400, code: "invalid-filename", file: "../.."},
		{name: "windows path", path: "/size", parts: []part{{name: "ok.bin", data: small}, {name: `..\\..\\`, data: small}},
			status: 400, code: "invalid-filename", file: `..\\..\\`},
		{name: "reserved name", path: "/size", parts: []part{{name: ".uploads/x.bin", data: small}},
			status: 400, code: "invalid-filename", file: ".uploads/x.bin"},
		{name: "control character", path: "/size", parts: []part{{name: "x", disposition: `form-data; name="files"; filename*=UTF-8''a%01.bin`, data: small}},
			status: 400, code: "invalid-filename", file: "a\x01.bin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := postFiles(t, tc.path, nil, tc.parts...)
			assertError(t, res, body, tc.status, tc.code, tc.file)
			dir := filepath.Join(root, strings.TrimPrefix(tc.path, "/"))
			assertStored(t, dir) // nothing stored, no temp file left
		})
	}

	t.Run("accepted types", func(t *testing.T) {
		pdf := []byte("%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n")
		for _, tc := range []struct {
			path, name, ctype string
			data              []byte
		}{
			{"/images", "cat.png", "image/png", pngBytes()},
			{"/images", "cat2.png", "application/octet-stream", pngBytes()},
			{"/pdf", "doc.pdf", "application/pdf", pdf},
		} {
			res, body := postFiles(t, tc.path, nil, part{name: tc.name, ctype: tc.ctype, data: tc.data})
			if res.StatusCode != http.StatusCreated {
				t.Errorf("%s to %s: status %d, body %s", tc.name, tc.path, res.StatusCode, body)
			}
		}
	})

	t.Run("limits exactly met", func(t *testing.T) {
		res, body := postFiles(t, "/size", nil, part{name: "max.bin", data: make([]byte, 1000)}, part{name: "min.bin", data: make([]byte, 10)})
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("status %d, body %s", res.StatusCode, body)
		}
		res, body = postFiles(t, "/files", nil, part{name: "1.bin", data: small}, part{name: "2.bin", data: small})
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("status %d, body %s", res.StatusCode, body)
		}
	})

	t.Run("request limit while streaming", func(t *testing.T) {
		// No Content-Length: the limit can only be found by counting.
		buf, ctype := multipartBody(t, part{name: "a.bin", data: make([]byte, 5000)})
		req, _ := http.NewRequest(http.MethodPost, siteOf(t)+"/req", io.MultiReader(buf))
		req.Header.Set("Content-Type", ctype)
		res, body := do(t, req)
		if req.ContentLength > 0 || len(req.TransferEncoding) > 0 && req.TransferEncoding[0] != "chunked" {
			t.Fatalf("the request was meant to be chunked")
		}
		assertError(t, res, body, 413, "request-too-large", "a.bin")
		assertStored(t, filepath.Join(root, "req"))
	})

	t.Run("malformed bodies", func(t *testing.T) {
		good, ctype := multipartBody(t, part{name: "a.bin", data: small})
		for _, tc := range []struct {
			name, ctype string
			body        []byte
		}{
			{"not multipart", "application/json", []byte(`{}`)},
			{"no boundary", "multipart/form-data", good.Bytes()},
			{"wrong boundary", "multipart/form-data; boundary=nope", good.Bytes()},
			{"truncated", ctype, good.Bytes()[:good.Len()-10]},
			{"cut in the file", ctype, good.Bytes()[:300]},
		} {
			req, _ := http.NewRequest(http.MethodPost, siteOf(t)+"/size", bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ctype)
			res, body := do(t, req)
			if res.StatusCode != http.StatusBadRequest || decode[errorBody](t, body).Code != "invalid-request" {
				t.Errorf("%s: status %d, body %s; want 400 invalid-request", tc.name, res.StatusCode, body)
			}
		}
		waitStored(t, filepath.Join(root, "size"), "max.bin", "min.bin")
	})
}

// TestE2EDisconnect cuts the connection mid-file and checks that the server
// removes the temp file and stores nothing.
func TestE2EDisconnect(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	conn, err := net.Dial("tcp", hostOf(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const boundary = "cut-here"
	head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"files\"; filename=\"cut.bin\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n"
	fmt.Fprintf(conn, "POST /_upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=%s\r\n"+
		"Content-Length: %d\r\n\r\n%s", boundary, 10<<20, head)
	chunk := bytes.Repeat([]byte("z"), 1<<20)
	for range 3 {
		if _, err := conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the server holds part of the file in a temp file.
	deadline := time.Now().Add(10 * time.Second)
	for {
		files := storedFiles(t, root)
		if len(files) == 1 && strings.HasPrefix(files[0], reservedDir+"/"+tempPrefix) {
			if fi, err := os.Stat(filepath.Join(root, files[0])); err == nil && fi.Size() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no temp file appeared: %q", files)
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn.Close()
	waitStored(t, root)
}

// TestE2EServeUnsafe checks the headers that keep uploaded HTML and SVG
// from running in the site's origin, and that PDFs display inline.
func TestE2EServeUnsafe(t *testing.T) {
	t.Parallel()
	startSite(t, "reflex_upload {\nroot ROOT\n}")
	svg := []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)
	html := []byte(`<!DOCTYPE html><script>alert(document.cookie)</script>`)
	pdf := []byte("%PDF-1.4\n%%EOF\n")
	res, body := postFiles(t, "/_upload", nil,
		part{name: "evil.html", ctype: "text/html", data: html},
		part{name: "evil.svg", ctype: "image/svg+xml", data: svg},
		part{name: "doc.pdf", ctype: "application/pdf", data: pdf},
		part{name: "noext", data: html},
	)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	for _, tc := range []struct {
		path, ctype, disposition string
		data                     []byte
	}{
		{"/_upload/evil.html", "text/html; charset=utf-8", "attachment; filename=evil.html", html},
		{"/_upload/evil.svg", "image/svg+xml", "attachment; filename=evil.svg", svg},
		{"/_upload/doc.pdf", "application/pdf", "", pdf},
		{"/_upload/noext", "application/octet-stream", "attachment; filename=noext", html},
	} {
		res, body := get(t, tc.path)
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, tc.data) {
			t.Errorf("GET %s: status %d; want 200 and the stored bytes", tc.path, res.StatusCode)
		}
		if got := res.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s: Content-Type %q; want %q", tc.path, got, tc.ctype)
		}
		if got := res.Header.Get("Content-Disposition"); got != tc.disposition {
			t.Errorf("GET %s: Content-Disposition %q; want %q", tc.path, got, tc.disposition)
		}
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q; want nosniff", tc.path, got)
		}
	}
}

// TestE2EConcurrentOverwrite uploads the same name many times at once while
// readers fetch it: every read must be one whole version, never a mix.
func TestE2EConcurrentOverwrite(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\nfsync off\n}")
	const size, writers, rounds = 256 << 10, 4, 5
	version := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, size) }
	if res, body := postFiles(t, "/_upload", nil, part{name: "same.bin", data: version(0)}); res.StatusCode != 201 {
		t.Fatalf("first upload: %d %s", res.StatusCode, body)
	}
	whole := func(b []byte) bool {
		return len(b) == size && bytes.Count(b, b[:1]) == size && b[0] >= 'a' && b[0] < 'a'+writers
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var mu sync.Mutex
	var torn []string
	reads := 0
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				disk, err := os.ReadFile(filepath.Join(root, "same.bin"))
				res, err2 := client.Get(siteOf(t) + "/_upload/same.bin")
				var served []byte
				if err2 == nil {
					served, err2 = io.ReadAll(res.Body)
					res.Body.Close()
				}
				mu.Lock()
				reads++
				if err != nil || !whole(disk) {
					torn = append(torn, fmt.Sprintf("disk: %d bytes, err %v", len(disk), err))
				}
				if err2 != nil || res.StatusCode != 200 || !whole(served) {
					torn = append(torn, fmt.Sprintf("served: %d bytes, err %v", len(served), err2))
				}
				mu.Unlock()
			}
		})
	}
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Go(func() {
			for range rounds {
				body, ctype := multipartBody(t, part{name: "same.bin", data: version(w)})
				res, err := client.Post(siteOf(t)+"/_upload", ctype, body)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusCreated {
					t.Errorf("upload status %d", res.StatusCode)
				}
			}
		})
	}
	writersWG.Wait()
	close(stop)
	readers.Wait()
	if len(torn) > 0 {
		t.Fatalf("%d of %d reads saw a torn file, e.g. %s", len(torn), reads, torn[0])
	}
	if reads == 0 {
		t.Fatal("no reads happened")
	}
	assertStored(t, root, "same.bin")
}

func TestE2EConflictPolicies(t *testing.T) {
	t.Parallel()
	root := startSite(t, `
reflex_upload {
	root ROOT/overwrite
	prefix /overwrite
}
reflex_upload {
	root ROOT/rename
	prefix /rename
	on_conflict rename
}
reflex_upload {
	root ROOT/reject
	prefix /reject
	on_conflict reject
}`)
	read := func(t *testing.T, p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	send := func(t *testing.T, prefix string, parts ...part) ([]storedFile, *http.Response, []byte) {
		t.Helper()
		res, body := postFiles(t, prefix, nil, parts...)
		if res.StatusCode != http.StatusCreated {
			return nil, res, body
		}
		return decode[uploadResult](t, body).Files, res, body
	}

	t.Run("overwrite", func(t *testing.T) {
		send(t, "/overwrite", part{name: "a.txt", data: []byte("one")})
		files, res, body := send(t, "/overwrite", part{name: "a.txt", data: []byte("two")})
		if res.StatusCode != 201 || files[0].Path != "a.txt" {
			t.Fatalf("status %d, %s", res.StatusCode, body)
		}
		if got := read(t, "overwrite/a.txt"); got != "two" {
			t.Fatalf("a.txt = %q; want the new content", got)
		}
		// A folder in the way is a conflict, not a 500, and nothing of the request stays.
		send(t, "/overwrite", part{name: "dir/x.txt", data: []byte("x")})
		_, res, body = send(t, "/overwrite", part{name: "b.txt", data: []byte("b")}, part{name: "dir", data: []byte("y")})
		assertError(t, res, body, 409, "file-exists", "dir")
		assertStored(t, filepath.Join(root, "overwrite"), "a.txt", "dir/x.txt")
	})

	t.Run("rename", func(t *testing.T) {
		var paths []string
		for i := range 3 {
			files, res, body := send(t, "/rename", part{name: "docs/a.txt", data: fmt.Appendf(nil, "v%d", i)})
			if res.StatusCode != 201 {
				t.Fatalf("status %d, %s", res.StatusCode, body)
			}
			paths = append(paths, files[0].Path)
		}
		files, _, _ := send(t, "/rename", part{name: ".env", data: []byte("dot")}, part{name: ".env", data: []byte("dot2")})
		paths = append(paths, files[0].Path, files[1].Path)
		want := []string{"docs/a.txt", "docs/a (1).txt", "docs/a (2).txt", ".env", ".env (1)"}
		if fmt.Sprint(paths) != fmt.Sprint(want) {
			t.Fatalf("stored at %q; want %q", paths, want)
		}
		if read(t, "rename/docs/a (2).txt") != "v2" || read(t, "rename/docs/a.txt") != "v0" || files[1].URL != "/rename/.env%20%281%29" && files[1].URL != "/rename/.env%20(1)" {
			t.Fatalf("contents or URL wrong: %q", files[1].URL)
		}
	})

	t.Run("reject", func(t *testing.T) {
		send(t, "/reject", part{name: "a.txt", data: []byte("one")})
		_, res, body := send(t, "/reject", part{name: "a.txt", data: []byte("two")})
		assertError(t, res, body, 409, "file-exists", "a.txt")
		if got := read(t, "reject/a.txt"); got != "one" {
			t.Fatalf("a.txt = %q; want the original", got)
		}
		// Two files of one name in one request: the second is refused and the first is not kept.
		_, res, body = send(t, "/reject", part{name: "b.txt", data: []byte("1")}, part{name: "b.txt", data: []byte("2")})
		assertError(t, res, body, 409, "file-exists", "b.txt")
		assertStored(t, filepath.Join(root, "reject"), "a.txt")
	})
}

func TestE2EReflexDialect(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	reflex := http.Header{"Reflex-Client-Token": {"tok-1"}, "Reflex-Event-Handler": {"state.handle_upload"}}
	res, body := postFiles(t, "/_upload", reflex,
		part{field: reflexArgsField, value: `{"note": "hi"}`},
		part{name: "/dir/a.txt", data: []byte("a")},
		part{name: "./b.txt", data: []byte("b")},
	)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/x-ndjson" || string(body) != "{}\n" {
		t.Fatalf("Reflex dialect: %d %q %q; want 200 application/x-ndjson {}", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	assertStored(t, root, "a.txt", "b.txt")

	for _, tc := range []struct {
		name string
		p    part
	}{
		{"not an object", part{field: reflexArgsField, value: `[1, 2]`}},
		{"bad JSON", part{field: reflexArgsField, value: `{"a":`}},
		{"null", part{field: reflexArgsField, value: `null`}},
		{"a file", part{field: reflexArgsField, name: "args.json", data: []byte(`{}`)}},
		{"over 1 MiB", part{field: reflexArgsField, value: `{"a":"` + strings.Repeat("x", 1<<20) + `"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := postFiles(t, "/_upload", reflex, tc.p, part{name: "c.txt", data: []byte("c")})
			if res.StatusCode/100 != 4 || !strings.Contains(string(body), reflexArgsField) && !strings.Contains(string(body), "1 MiB") {
				t.Fatalf("status %d, body %s; want a 4xx about %s", res.StatusCode, body, reflexArgsField)
			}
			assertStored(t, root, "a.txt", "b.txt")
		})
	}
}

// TestE2EBrowserEscapes sends file names as browsers encode them: '"' as
// %22, a newline as %0A.
func TestE2EBrowserEscapes(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	res, body := postFiles(t, "/_upload", nil, part{name: "x", disposition: `form-data; name="files"; filename="say %22hi%22.txt"`, data: []byte("hi")})
	if res.StatusCode != http.StatusCreated || decode[uploadResult](t, body).Files[0].Path != `say "hi".txt` {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	res, body = postFiles(t, "/_upload", nil, part{name: "x", disposition: `form-data; name="files"; filename="a%0Ab.txt"`, data: []byte("hi")})
	assertError(t, res, body, http.StatusBadRequest, "invalid-filename", "a\nb.txt")
	assertStored(t, root, `say "hi".txt`)
}
