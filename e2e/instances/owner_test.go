package instances_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOwnerAcrossInstances checks owner scoping across instances: at B,
// another Reflex-Client-Token (or none) neither reads nor cancels an
// upload that A receives for its owner, standard or resumable; the owner
// does, at any instance.
func TestOwnerAcrossInstances(t *testing.T) {
	c := startCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	const id = "scoped-1"
	data := randomBytes(1*mib, 3)
	up := startMultipart(t, a, id, "alice", "scoped.bin", data)
	if err := up.write(128 * kib); err != nil {
		t.Fatal(err)
	}
	waitProgress(t, b, id, "alice", func(s snapshot) bool { return s.State == "uploading" && s.Received >= 128*kib })

	for _, token := range []string{"mallory", ""} {
		_, body := progressOf(t, b, id, token)
		assertJSON(t, "progress at B for "+token, body, `{"id": "scoped-1", "state": "starting", "received": 0, "speed": 0}`)
		res, body := do(t, http.MethodDelete, b.url("/_upload/.uploads/"+id), map[string]string{tokenHeader: token}, nil)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("DELETE at B for %q: %d %s; want 404", token, res.StatusCode, body)
		}
		assertJSON(t, "DELETE at B for "+token, body, `{"code": "upload-not-found", "detail": "no upload in flight has this id"}`)
	}
	// The owner's upload went on untouched: it completes and is stored.
	time.Sleep(300 * time.Millisecond) // a cancel would have reached A by now
	if s, body := progressOf(t, b, id, "alice"); s.State != "uploading" {
		t.Fatalf("the owner's progress at B after the others' DELETEs: %s", body)
	}
	up.pace(256*kib, 0)
	res, body := up.response(t)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("the owner's upload at A: %d %s", res.StatusCode, body)
	}
	if got, err := os.ReadFile(filepath.Join(c.root, "scoped.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the stored file: %d bytes, %v", len(got), err)
	}

	// A resumable upload of alice, created at A: B answers another owner
	// 404 for HEAD, PATCH and DELETE, and leaves the upload as it was.
	loc := createTus(t, a, "alice", "scoped-tus.bin", 1000)
	if res, body := patch(t, a, "alice", loc, 0, data[:400]); res.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH at A: %d %s", res.StatusCode, body)
	}
	for _, req := range []struct {
		method string
		hdr    map[string]string
		body   []byte
	}{
		{http.MethodHead, tusHeaders("mallory"), nil},
		{http.MethodPatch, tusHeaders("mallory", "Upload-Offset", "400", "Content-Type", "application/offset+octet-stream"), data[:600]},
		{http.MethodDelete, tusHeaders("mallory"), nil},
		{http.MethodDelete, map[string]string{tokenHeader: "mallory"}, nil},
	} {
		res, body := do(t, req.method, b.url(loc), req.hdr, req.body)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("%s at B by another owner: %d %s; want 404", req.method, res.StatusCode, body)
		}
	}
	if off := headOffset(t, b, "alice", loc); off != 400 {
		t.Fatalf("HEAD at B by the owner: offset %d; want 400", off)
	}
	if res, body := patch(t, b, "alice", loc, 400, data[400:1000]); res.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH at B by the owner: %d %s", res.StatusCode, body)
	}
	if got, err := os.ReadFile(filepath.Join(c.root, "scoped-tus.bin")); err != nil || !bytes.Equal(got, data[:1000]) {
		t.Fatalf("the stored resumable upload: %d bytes, %v", len(got), err)
	}
}
