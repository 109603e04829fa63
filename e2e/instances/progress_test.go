package instances_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestProgressAcrossInstances sends a paced standard upload to A, polls
// its progress on B (JSON) and follows it on C (server-sent events): both
// see it uploading with a growing count, then done with the stored file.
func TestProgressAcrossInstances(t *testing.T) {
	c := startCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	const id, token = "paced-1", "alice"
	data := randomBytes(3*mib, 1)
	up := startMultipart(t, a, id, token, "paced.bin", data)
	if err := up.write(64 * kib); err != nil {
		t.Fatal(err)
	}
	waitProgress(t, b, id, token, func(s snapshot) bool { return s.State == "uploading" })

	// C streams the progress while A receives the rest, 64 KiB every 50 ms.
	events := make(chan []snapshot, 1)
	go func() { events <- followEvents(t, cc, id, token) }()
	sending := make(chan struct{})
	go func() { defer close(sending); up.pace(64*kib, 50*time.Millisecond) }()

	var polled []int64
	for {
		s, body := progressOf(t, b, id, token)
		if s.State == "done" {
			break
		}
		if s.State != "uploading" || s.Kind != "multipart" || s.Size == nil || *s.Size != int64(len(up.body)) {
			t.Fatalf("progress at B while A receives: %s", body)
		}
		if len(polled) == 0 || polled[len(polled)-1] != s.Received {
			polled = append(polled, s.Received)
		}
		time.Sleep(50 * time.Millisecond)
	}
	<-sending
	res, body := up.response(t)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("upload at A: %d %s", res.StatusCode, body)
	}
	if len(polled) < 3 || !sort.SliceIsSorted(polled, func(i, j int) bool { return polled[i] < polled[j] }) {
		t.Errorf("received counts polled at B: %v; want at least 3, growing", polled)
	}
	t.Logf("received counts polled at B: %v", polled)

	final, finalBody := progressOf(t, b, id, token)
	var files []struct {
		Path   string `json:"path"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(final.Files, &files); err != nil || len(files) != 1 || files[0].Path != "paced.bin" || files[0].Size != int64(len(data)) {
		t.Errorf("final progress at B: %s", finalBody)
	}

	var seen []snapshot
	select {
	case seen = <-events:
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream at C did not end after the upload")
	}
	var counts []int64
	for _, s := range seen {
		if s.State == "uploading" {
			counts = append(counts, s.Received)
		}
	}
	if len(seen) == 0 || seen[len(seen)-1].State != "done" || string(seen[len(seen)-1].Files) != string(final.Files) {
		t.Errorf("the event stream at C ends with %+v; want done with the files %s", seen[len(seen)-1:], final.Files)
	}
	if len(counts) < 3 || !slices.IsSorted(counts) || counts[0] == counts[len(counts)-1] {
		t.Errorf("uploading counts streamed at C: %v; want at least 3, growing", counts)
	}
	t.Logf("uploading counts streamed at C: %v", counts)

	got, err := os.ReadFile(filepath.Join(c.root, "paced.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the stored file: %d bytes, %v; want the %d bytes sent", len(got), err, len(data))
	}
}

// followEvents reads the server-sent events of id's progress at n until
// the stream ends.
func followEvents(t *testing.T, n *instance, id, token string) []snapshot {
	req, err := http.NewRequest(http.MethodGet, n.url("/_upload/.uploads/"+id), nil)
	if err != nil {
		t.Error(err)
		return nil
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set(tokenHeader, token)
	res, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Errorf("event stream at %s: %v", n.name, err)
		return nil
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("event stream at %s: %d %q", n.name, res.StatusCode, res.Header.Get("Content-Type"))
		return nil
	}
	var out []snapshot
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var s snapshot
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Errorf("event at %s: %v: %s", n.name, err, line)
			return out
		}
		out = append(out, s)
	}
	return out
}
