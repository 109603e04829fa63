package reflexupload

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"
)

// reflexBody builds a body exactly as Reflex's frontend (upload.js) does:
// the optional __reflex_event_args text part first, then one "files" part
// per file, named file.path || file.name, with the browser's type.
func reflexBody(t *testing.T, args string, files map[string][]byte, order []string) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if args != "" {
		if err := mw.WriteField(reflexArgsField, args); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range order {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="files"; filename=%s`, quoteParam(name)))
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[name])
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

// TestReflexWireFormat sends Reflex's wire format, a folder upload with
// the event args, in each mode.
func TestReflexWireFormat(t *testing.T) {
	app := newApp(t)
	files := map[string][]byte{
		"./a.png":       pngBytes(),
		"/dir/b.txt":    []byte("hello from a folder"),
		"dir/sub/c.bin": randomBytes(t, 70_000),
	}
	order := []string{"./a.png", "/dir/b.txt", "dir/sub/c.bin"}
	headers := func(req *http.Request) {
		req.Header.Set("Reflex-Client-Token", "client-token-1")
		req.Header.Set("Reflex-Event-Handler", "state.handle_upload")
		req.Header.Set("X-Reflex-Extra", "extra-header")
	}
	for _, mode := range []string{"store", "forward", "track"} {
		t.Run(mode, func(t *testing.T) {
			root := startSite(t, fmt.Sprintf(`reflex_upload {
				root ROOT
				mode %s
			}
			reverse_proxy %s`, mode, app.addr()))
			before := len(app.calls())
			body, ctype := reflexBody(t, `{"folder": "dir"}`, files, order)
			sent := bytes.Clone(body.Bytes())
			req, _ := http.NewRequest(http.MethodPost, siteOf(t)+"/_upload", body)
			req.Header.Set("Content-Type", ctype)
			headers(req)
			res, resBody := do(t, req)

			switch mode {
			case "store":
				// Reflex's dialect: upload.js reads each line as a state update.
				if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/x-ndjson" || string(resBody) != "{}\n" {
					t.Fatalf("%d %q %q", res.StatusCode, res.Header.Get("Content-Type"), resBody)
				}
				for name, want := range map[string][]byte{"a.png": files["./a.png"], "b.txt": files["/dir/b.txt"], "dir/sub/c.bin": files["dir/sub/c.bin"]} {
					if got, err := os.ReadFile(filepath.Join(root, name)); err != nil || !bytes.Equal(got, want) {
						t.Errorf("%s on disk differs (err %v)", name, err)
					}
				}
				if len(app.calls()) != before {
					t.Errorf("store mode called the app")
				}
			case "forward":
				if res.StatusCode != 200 || string(resBody) != "app says 200" {
					t.Fatalf("%d %q", res.StatusCode, resBody)
				}
				c := app.calls()[before]
				meta := decode[uploadResult](t, c.body)
				if c.header.Get("Reflex-Client-Token") != "client-token-1" || c.header.Get("Reflex-Event-Handler") != "state.handle_upload" ||
					c.header.Get("X-Reflex-Extra") != "extra-header" || len(meta.Files) != 3 || meta.Fields[reflexArgsField][0] != `{"folder": "dir"}` ||
					meta.Files[0].Path != "a.png" || meta.Files[1].Path != "b.txt" || meta.Files[2].Path != "dir/sub/c.bin" {
					t.Fatalf("the app got %v %s", c.header, c.body)
				}
				assertStored(t, root, "a.png", "b.txt", "dir/sub/c.bin")
			case "track":
				if res.StatusCode != 200 || string(resBody) != "app says 200" {
					t.Fatalf("%d %q", res.StatusCode, resBody)
				}
				c := app.calls()[before]
				if !c.complete || !bytes.Equal(c.body, sent) || c.header.Get("X-Reflex-Extra") != "extra-header" {
					t.Fatalf("the app did not get Reflex's body unchanged")
				}
				assertStored(t, root)
			}
		})
	}
}

// TestForwardProgressAndCancel: a forward-mode upload is in the progress
// registry and can be cancelled like any other; the app never hears of it.
func TestForwardProgressAndCancel(t *testing.T) {
	app := newApp(t)
	root := startSite(t, fmt.Sprintf(`reflex_upload {
		root ROOT
		mode forward
	}
	reverse_proxy %s`, app.addr()))
	up := startRawUpload(t, "/_upload", http.Header{"X-Progress-Id": {"fwd-1"}}, "f.bin", 200_000, 60_000)
	p := waitProgress(t, "fwd-1", func(p progressBody) bool { return p.Received >= 60_000 })
	if p.State != stateUploading {
		t.Fatalf("progress: %+v", p)
	}
	if res, body := deleteUpload(t, "fwd-1"); res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", res.StatusCode, body)
	}
	res, body := up.response(t)
	assertError(t, res, body, http.StatusConflict, "upload-cancelled", "")
	waitStored(t, root)
	if n := len(app.calls()); n != 0 {
		t.Fatalf("the app heard of a cancelled upload (%d calls)", n)
	}

}
