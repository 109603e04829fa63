package instances_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// tusHeaders are the headers of a tus request of token, plus more (pairs).
func tusHeaders(token string, more ...string) map[string]string {
	h := map[string]string{"Tus-Resumable": "1.0.0", tokenHeader: token}
	for i := 0; i+1 < len(more); i += 2 {
		h[more[i]] = more[i+1]
	}
	return h
}

// createTus creates a resumable upload of size bytes named name at n and
// returns its path.
func createTus(t *testing.T, n *instance, token, name string, size int) string {
	t.Helper()
	meta := "filename " + base64.StdEncoding.EncodeToString([]byte(name))
	res, body := do(t, http.MethodPost, n.url("/_upload/.uploads"),
		tusHeaders(token, "Upload-Length", strconv.Itoa(size), "Upload-Metadata", meta), nil)
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusCreated || loc == "" {
		t.Fatalf("creation at %s: %d %q %s", n.name, res.StatusCode, loc, body)
	}
	if u, err := res.Request.URL.Parse(loc); err == nil {
		loc = u.Path
	}
	return loc
}

// headOffset asks n for the offset of the upload at loc.
func headOffset(t *testing.T, n *instance, token, loc string) int {
	t.Helper()
	res, _ := do(t, http.MethodHead, n.url(loc), tusHeaders(token), nil)
	off, err := strconv.Atoi(res.Header.Get("Upload-Offset"))
	if res.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("HEAD at %s: %d, Upload-Offset %q", n.name, res.StatusCode, res.Header.Get("Upload-Offset"))
	}
	return off
}

// patch sends one PATCH of chunk at offset to n.
func patch(t *testing.T, n *instance, token, loc string, offset int, chunk []byte) (*http.Response, []byte) {
	t.Helper()
	return do(t, http.MethodPatch, n.url(loc), tusHeaders(token,
		"Upload-Offset", strconv.Itoa(offset), "Content-Type", "application/offset+octet-stream"), chunk)
}

// TestTusAcrossInstances creates a resumable upload at A, sends its
// PATCHes alternately to A and B, and asks C for the offset between them:
// the offset is always right, and the stored file is byte-identical with
// its sha256 in the progress read at C.
func TestTusAcrossInstances(t *testing.T) {
	c := startCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	const token, chunk = "alice", 1 * mib
	data := randomBytes(6*mib+12345, 2)
	loc := createTus(t, a, token, "tus.bin", len(data))
	id := path.Base(loc)
	for off, i := 0, 0; off < len(data); i++ {
		n := []*instance{a, b}[i%2]
		end := min(off+chunk, len(data))
		res, body := patch(t, n, token, loc, off, data[off:end])
		if res.StatusCode != http.StatusNoContent || res.Header.Get("Upload-Offset") != strconv.Itoa(end) {
			t.Fatalf("PATCH %d at %s: %d, Upload-Offset %q: %s", i, n.name, res.StatusCode, res.Header.Get("Upload-Offset"), body)
		}
		off = end
		if got := headOffset(t, cc, token, loc); got != off {
			t.Fatalf("HEAD at C after PATCH %d: offset %d; want %d", i, got, off)
		}
	}
	got, err := os.ReadFile(filepath.Join(c.root, "tus.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the stored file: %d bytes, %v; want the %d bytes sent", len(got), err, len(data))
	}
	sum := sha256.Sum256(data)
	s, raw := progressOf(t, cc, id, token)
	var files []struct {
		Path   string `json:"path"`
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(s.Files, &files); s.State != "done" || err != nil || len(files) != 1 ||
		files[0].Path != "tus.bin" || files[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("progress at C: %s; want done with tus.bin and sha256 %x", raw, sum)
	}
}

// TestTusRaceAcrossInstances sends two PATCHes of different bytes for one
// upload at once, to A and to B, 20 times: at most one succeeds, the other
// is refused (409) or interrupted (503), and the upload holds an exact
// prefix of one of the two, never a mix: completed from its offset, the
// stored file is one body's prefix followed by the rest.
func TestTusRaceAcrossInstances(t *testing.T) {
	c := startCluster(t, 3)
	a := c.nodes[0]
	const token, size = "alice", 1 * mib
	outcomes := map[string]int{}
	for i := range 20 {
		name := fmt.Sprintf("race-%02d.bin", i)
		bodies := [2][]byte{randomBytes(size, uint64(100+2*i)), randomBytes(size, uint64(101+2*i))}
		loc := createTus(t, a, token, name, size)
		outcomes[racePatches(t, i, c.nodes, token, loc, bodies, func() []byte {
			got, err := os.ReadFile(filepath.Join(c.root, name))
			if err != nil {
				t.Fatalf("round %d: the stored file: %v", i, err)
			}
			return got
		})]++
	}
	t.Logf("outcomes over 20 rounds: %v", outcomes)
}

// racePatches sends two PATCHes of bodies for the upload at loc at once,
// the first to nodes[0] and the second to nodes[1]: at most one succeeds,
// the other is refused (409) or interrupted (503). It then completes the
// upload at nodes[2] from its offset with the rest of the first body, and
// checks what stored gives (the file's bytes): the completion's bytes
// after an exact prefix of one of the two bodies, never a mix. It returns
// the two statuses, as an outcome to count.
func racePatches(t *testing.T, round int, nodes []*instance, token, loc string, bodies [2][]byte, stored func() []byte) string {
	t.Helper()
	size := len(bodies[0])
	var wg sync.WaitGroup
	statuses := [2]int{}
	for j, n := range nodes[:2] {
		r := startRaw(t, n, http.MethodPatch, loc, tusHeaders(token,
			"Upload-Offset", "0", "Content-Type", "application/offset+octet-stream"), bodies[j])
		wg.Add(1)
		go func() {
			defer wg.Done()
			go r.pace(32*kib, 5*time.Millisecond)
			res, body, err := r.read()
			if err != nil {
				t.Errorf("round %d, PATCH at %s: %v", round, n.name, err)
				return
			}
			statuses[j] = res.StatusCode
			switch res.StatusCode {
			case http.StatusNoContent, http.StatusConflict, http.StatusServiceUnavailable:
			default:
				t.Errorf("round %d, PATCH at %s: %d %s; want 204, 409 or 503", round, n.name, res.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if statuses[0] == http.StatusNoContent && statuses[1] == http.StatusNoContent {
		t.Fatalf("round %d: both PATCHes succeeded", round)
	}

	// Complete the upload from its offset with the rest of the first body
	// (whichever body's prefix it holds: the prefix is checked below).
	off := headOffset(t, nodes[2], token, loc)
	if off < size {
		res, body := patch(t, nodes[2], token, loc, off, bodies[0][off:])
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("round %d, completing at %s from %d: %d %s", round, nodes[2].name, off, res.StatusCode, body)
		}
	}
	got := stored()
	if len(got) != size || !bytes.Equal(got[off:], bodies[0][off:]) {
		t.Fatalf("round %d: the stored file: %d bytes, or not the completion's", round, len(got))
	}
	if !bytes.Equal(got[:off], bodies[0][:off]) && !bytes.Equal(got[:off], bodies[1][:off]) {
		t.Fatalf("round %d: the first %d bytes are a mix of the two PATCHes", round, off)
	}
	return fmt.Sprintf("%s %d, %s %d", nodes[0].name, statuses[0], nodes[1].name, statuses[1])
}

// TestTusKillAcrossInstances kills (SIGKILL) the instance receiving a
// PATCH: the dead instance's lock goes with its lease, HEAD at B gives an
// offset whose bytes are all there, and the upload completes at B
// byte-identical.
func TestTusKillAcrossInstances(t *testing.T) {
	c := startCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	const token, size, sent = "alice", 24 * mib, 20 * mib
	data := randomBytes(size, 4)
	loc := createTus(t, a, token, "killed.bin", size)
	id := path.Base(loc)

	// One PATCH for the whole file, of which only 20 MiB are sent; A is
	// killed once it has saved the upload mid-PATCH (every 16 MiB).
	r := startRaw(t, a, http.MethodPatch, loc, tusHeaders(token,
		"Upload-Offset", "0", "Content-Type", "application/offset+octet-stream"), data)
	if err := r.write(sent); err != nil {
		t.Fatal(err)
	}
	statePath := filepath.Join(c.root, ".uploads", "tus", id+".json")
	for deadline := time.Now().Add(30 * time.Second); ; {
		var state struct {
			Offset int64 `json:"offset"`
		}
		if b, err := os.ReadFile(statePath); err == nil && json.Unmarshal(b, &state) == nil && state.Offset >= 16*mib {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload's state never counted 16 MiB")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.caddy.Kill(t)

	start := time.Now()
	off := headOffset(t, b, token, loc)
	t.Logf("HEAD at B answered %v after A was killed: offset %d", time.Since(start).Round(time.Millisecond), off)
	if off < 16*mib || off > sent {
		t.Fatalf("HEAD at B after A was killed: offset %d; want 16 MiB to 20 MiB", off)
	}
	res, body := patch(t, b, token, loc, off, data[off:])
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("resuming at B from %d: %d %s", off, res.StatusCode, body)
	}
	got, err := os.ReadFile(filepath.Join(c.root, "killed.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the stored file: %d bytes, %v; want the %d bytes sent", len(got), err, len(data))
	}
}
