package reflexupload

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestTusOtherOwnerCannotStopWriter sends, while alice's PATCH is in
// flight, every request another owner (or a request without an owner) can
// make on her upload id: each answers 404 and none stops her PATCH, which
// then completes the file.
func TestTusOtherOwnerCannotStopWriter(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	data := randomBytes(t, 300_000)
	loc := tusCreate(t, len(data), "mine.bin", "Reflex-Client-Token", "alice")
	id := strings.TrimPrefix(loc, tusEndpoint+"/")

	up := stallAlicePatch(t, loc, id, data)

	for _, tc := range []struct {
		name, method string
		headers      []string
	}{
		{"DELETE by bob", http.MethodDelete, []string{"Reflex-Client-Token", "bob"}},
		{"DELETE without an owner", http.MethodDelete, nil},
		{"DELETE by bob without Tus-Resumable", http.MethodDelete, []string{"Reflex-Client-Token", "bob", "Tus-Resumable", ""}},
		{"DELETE without an owner nor Tus-Resumable", http.MethodDelete, []string{"Tus-Resumable", ""}},
		{"overridden DELETE by bob", http.MethodPost, []string{"X-HTTP-Method-Override", "DELETE", "Reflex-Client-Token", "bob"}},
		{"overridden DELETE without an owner", http.MethodPost, []string{"X-HTTP-Method-Override", "DELETE"}},
		{"HEAD by bob", http.MethodHead, []string{"Reflex-Client-Token", "bob"}},
		{"HEAD without an owner", http.MethodHead, nil},
		{"PATCH by bob", http.MethodPatch, []string{"Reflex-Client-Token", "bob", "Upload-Offset", "100000"}},
		{"PATCH without an owner", http.MethodPatch, []string{"Upload-Offset", "100000"}},
	} {
		var body []byte
		if tc.method == http.MethodPatch {
			body = []byte("x")
		}
		res, got := tusDo(t, tc.method, loc, body, tc.headers...)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status %d, body %s; want 404", tc.name, res.StatusCode, got)
		}
		if tc.method != http.MethodHead {
			// Without Tus-Resumable a DELETE is the cancel of any upload.
			detail := "no resumable upload has this id"
			if strings.Contains(tc.name, "without Tus-Resumable") || strings.Contains(tc.name, "nor Tus-Resumable") {
				detail = "no upload in flight has this id"
			}
			assertJSON(t, tc.name, got, `{"code": "upload-not-found", "detail": "`+detail+`"}`, nil)
		}
	}

	if _, err := up.conn.Write(data[100_000:]); err != nil {
		t.Fatal(err)
	}
	res, body := up.response(t)
	assertOffset(t, res, body, http.StatusNoContent, len(data))
	if got, err := os.ReadFile(filepath.Join(root, "mine.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("mine.bin differs from what alice sent (err %v)", err)
	}

	// The same for a standard upload: another owner's cancel is refused and
	// the upload completes.
	mp := startRawUpload(t, "/_upload", http.Header{"Reflex-Client-Token": {"alice"}, "X-Progress-Id": {"alice-std"}}, "std.bin", 5000, 1000)
	waitProgress(t, "alice-std", func(p progressBody) bool { return p.Received > 0 }, "Reflex-Client-Token", "alice")
	for _, other := range [][]string{{"Reflex-Client-Token", "bob"}, {"X-HTTP-Method-Override", "DELETE"}} {
		method := http.MethodDelete
		if other[0] == "X-HTTP-Method-Override" {
			method = http.MethodPost
		}
		res, body := tusDo(t, method, "/_upload/.uploads/alice-std", nil, append([]string{"Tus-Resumable", ""}, other...)...)
		assertError(t, res, body, http.StatusNotFound, "upload-not-found", "")
		assertJSON(t, "another owner's cancel", body, `{"code": "upload-not-found", "detail": "no upload in flight has this id"}`, nil)
	}
	mp.send(t, 4000)
	mp.finish(t)
	if res, body := mp.response(t); res.StatusCode != http.StatusCreated {
		t.Fatalf("alice's standard upload: %d %s", res.StatusCode, body)
	}
}

// tusTry sends one tus request from a goroutine: no t.Fatal there (t
// names the site only).
func tusTry(t testing.TB, method, target string, body []byte, headers ...string) (int, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, siteOf(t)+target, rd)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// TestTusConcatRaces builds final uploads while one of their partial
// uploads is terminated, and two final uploads over the same partial one at
// the same time, many times: exactly one of the racing requests wins, the
// other gets a clear 4xx (never a 500), and what is on disk matches.
func TestTusConcatRaces(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	data := randomBytes(t, 256<<10)
	partial := func() string {
		t.Helper()
		res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", strconv.Itoa(len(data)), "Upload-Concat", "partial")
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("partial: %d %s", res.StatusCode, body)
		}
		loc := res.Header.Get("Location")
		res, body = tusPatch(t, loc, 0, data)
		assertOffset(t, res, body, http.StatusNoContent, len(data))
		return loc
	}
	final := func(name, part string) (int, string, error) {
		return tusTry(t, http.MethodPost, tusEndpoint, nil, "Upload-Concat", "final;"+part, "Upload-Metadata", "filename "+b64(name))
	}
	// refusedPartial checks the answer to a final upload whose partial
	// upload is gone.
	refusedPartial := func(what, loc string, status int, body string) {
		t.Helper()
		if status != http.StatusBadRequest {
			t.Errorf("%s: %d %s; want 400", what, status, body)
			return
		}
		assertJSON(t, what, []byte(body), `{"code": "invalid-request", "detail": "partial upload \"`+loc+`\" is not found"}`, nil)
	}
	var want []string // the files that must be under the root
	const tries = 40
	for i := range tries {
		loc := partial()
		var wg sync.WaitGroup
		var fStatus, dStatus int
		var fBody, dBody string
		var fErr, dErr error
		name := fmt.Sprintf("del-%02d.bin", i)
		wg.Add(2)
		go func() { defer wg.Done(); fStatus, fBody, fErr = final(name, loc) }()
		go func() { defer wg.Done(); dStatus, dBody, dErr = tusTry(t, http.MethodDelete, loc, nil) }()
		wg.Wait()
		if fErr != nil || dErr != nil {
			t.Fatalf("try %d: %v %v", i, fErr, dErr)
		}
		switch {
		case fStatus == http.StatusCreated && dStatus == http.StatusNotFound:
			got, err := os.ReadFile(filepath.Join(root, name))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("try %d: %s differs from the partial upload (err %v)", i, name, err)
			}
			want = append(want, name)
		case dStatus == http.StatusNoContent:
			refusedPartial(fmt.Sprintf("try %d: final upload after termination", i), loc, fStatus, fBody)
		default:
			t.Errorf("try %d: final %d %s, DELETE %d %s; want one of them to win", i, fStatus, fBody, dStatus, dBody)
		}
	}
	for i := range tries {
		loc := partial()
		var wg sync.WaitGroup
		status := make([]int, 2)
		body := make([]string, 2)
		errs := make([]error, 2)
		names := []string{fmt.Sprintf("two-%02d-a.bin", i), fmt.Sprintf("two-%02d-b.bin", i)}
		for k := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); status[k], body[k], errs[k] = final(names[k], loc) }()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("try %d: %v", i, errs)
		}
		won := slices.Index(status, http.StatusCreated)
		if won < 0 || status[1-won] == http.StatusCreated {
			t.Errorf("try %d: %d %s, %d %s; want exactly one 201", i, status[0], body[0], status[1], body[1])
			continue
		}
		refusedPartial(fmt.Sprintf("try %d: the second final upload", i), loc, status[1-won], body[1-won])
		want = append(want, names[won])
	}
	// Only the stored files and the final uploads' state files are left.
	var got []string
	for _, f := range storedFiles(t, root) {
		if !strings.HasPrefix(f, ".uploads/tus/") {
			got = append(got, f)
		} else if !strings.HasSuffix(f, ".json") {
			t.Errorf("partial data left behind: %s", f)
		}
	}
	slices.Sort(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stored files %q; want %q", got, want)
	}
	if n := len(storedFiles(t, root)) - len(got); n != len(want) {
		t.Errorf("%d state files left; want %d, one per final upload", n, len(want))
	}
}

// TestTusDeleteCancelsPatch terminates an upload while its PATCH is in
// flight and stalled: the PATCH stops at once and answers 409
// upload-cancelled, the DELETE 204, and nothing of the upload is left.
func TestTusDeleteCancelsPatch(t *testing.T) {
	t.Parallel()
	root := startSite(t, "reflex_upload {\nroot ROOT\n}")
	data := randomBytes(t, 300_000)
	loc := tusCreate(t, len(data), "gone.bin", "Reflex-Client-Token", "alice")
	id := strings.TrimPrefix(loc, tusEndpoint+"/")

	up := stallAlicePatch(t, loc, id, data)

	res, body := tusDo(t, http.MethodDelete, loc, nil, "Reflex-Client-Token", "alice")
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", res.StatusCode, body)
	}
	res, body = up.response(t)
	assertError(t, res, body, http.StatusConflict, "upload-cancelled", "")
	if p := progressOf(t, id, "Reflex-Client-Token", "alice"); p.State != stateCancelled {
		t.Errorf("progress after the DELETE: %+v; want cancelled", p)
	}
	res, _ = tusDo(t, http.MethodHead, loc, nil, "Reflex-Client-Token", "alice")
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD after the DELETE: %d; want 404", res.StatusCode)
	}
	assertStored(t, root)
}

// stallAlicePatch starts alice's PATCH of data to upload loc (id), sends
// its first 100 000 bytes and waits until the server has them.
func stallAlicePatch(t *testing.T, loc, id string, data []byte) *rawUpload {
	t.Helper()
	up := dialRaw(t, fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\nReflex-Client-Token: alice\r\n"+
		"Content-Type: %s\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n", loc, tusContentType, len(data)))
	if _, err := up.conn.Write(data[:100_000]); err != nil {
		t.Fatal(err)
	}
	waitProgress(t, id, func(p progressBody) bool { return p.Received >= 100_000 }, "Reflex-Client-Token", "alice")
	return up
}
