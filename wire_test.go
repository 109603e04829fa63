package reflexupload

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
)

// The JSON on the wire, pinned as literal JSON (as the README shows it): the upload answer, the
// progress of a finished, an unknown and a refused upload, and an error
// body. Values that change from run to run (start time, speed) are checked
// for their type and then replaced by "<string>" and "<number>", so every
// other field name, type and value is compared as it is.

// canonicalJSON re-encodes JSON with sorted keys and no spaces, after
// replacing the values of the volatile keys (checked to have the given
// JSON type: "string" or "number") at any depth.
func canonicalJSON(t *testing.T, raw []byte, volatile map[string]string) string {
	t.Helper()
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, raw)
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, val := range x {
				if kind, ok := volatile[k]; ok {
					switch kind {
					case "string":
						if _, ok := val.(string); !ok {
							t.Errorf("%q is %T, want a string", k, val)
						}
						x[k] = "<string>"
					case "number":
						if _, ok := val.(json.Number); !ok {
							t.Errorf("%q is %T, want a number", k, val)
						}
						x[k] = "<number>"
					}
					continue
				}
				x[k] = walk(val)
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		}
		return v
	}
	out, err := json.Marshal(walk(v))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func assertJSON(t *testing.T, what string, got []byte, want string, volatile map[string]string) {
	t.Helper()
	g := canonicalJSON(t, got, volatile)
	w := canonicalJSON(t, []byte(want), nil)
	if g != w {
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func TestWireJSON(t *testing.T) {
	t.Parallel()
	startSite(t, `reflex_upload {
		root ROOT
		max_size 1KiB
	}`)
	hdr := http.Header{"X-Progress-Id": {"wire-1"}}
	res, body := postFiles(t, "/_upload", hdr,
		part{name: "notes/a.txt", ctype: "text/plain", data: []byte("hello\n")},
		part{field: "note", value: "kept"})
	if res.StatusCode != http.StatusCreated || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("upload: %d %q %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	assertJSON(t, "upload answer", body, `{
		"upload_id": "wire-1",
		"files": [{
			"field": "files",
			"name": "a.txt",
			"path": "notes/a.txt",
			"url": "/_upload/notes/a.txt",
			"size": 6,
			"content_type": "text/plain; charset=utf-8",
			"sha256": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
		}],
		"fields": {"note": ["kept"]}
	}`, nil)

	_, body = get(t, "/_upload/.uploads/wire-1")
	assertJSON(t, "progress of a finished upload", body, `{
		"id": "wire-1",
		"state": "done",
		"kind": "multipart",
		"received": 353,
		"size": 353,
		"speed": "<number>",
		"started_at": "<string>",
		"files": [{
			"field": "files",
			"name": "a.txt",
			"path": "notes/a.txt",
			"url": "/_upload/notes/a.txt",
			"size": 6,
			"content_type": "text/plain; charset=utf-8",
			"sha256": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
		}]
	}`, map[string]string{"started_at": "string", "speed": "number"})

	_, body = get(t, "/_upload/.uploads/never-seen")
	assertJSON(t, "progress of an unknown id", body, `{"id": "never-seen", "state": "starting", "received": 0, "speed": 0}`, nil)

	res, body = postFiles(t, "/_upload", http.Header{"X-Progress-Id": {"wire-2"}},
		part{name: "big.bin", data: bytes.Repeat([]byte("x"), 2048)})
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize upload: %d %s", res.StatusCode, body)
	}
	assertJSON(t, "error body", body, `{
		"detail": "<string>",
		"code": "file-too-large",
		"file": "big.bin"
	}`, map[string]string{"detail": "string"})

	_, body = get(t, "/_upload/.uploads/wire-2")
	assertJSON(t, "progress of a refused upload", body, `{
		"id": "wire-2",
		"state": "error",
		"kind": "multipart",
		"size": 2288,
		"status": 413,
		"code": "file-too-large",
		"received": "<number>",
		"speed": "<number>",
		"started_at": "<string>"
	}`, map[string]string{"started_at": "string", "speed": "number", "received": "number"})
}
