package instances_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCancelAcrossInstances cancels, with a DELETE at B, a standard upload
// whose client has stalled at A: A's client is answered 409
// upload-cancelled within a second, C reads it as cancelled, and nothing
// is stored. Five times, for the latency.
func TestCancelAcrossInstances(t *testing.T) {
	c := startCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	const token = "alice"
	var latencies []time.Duration
	for i := range 5 {
		id := "cancel-" + string(rune('0'+i))
		up := startMultipart(t, a, id, token, "cancelled.bin", randomBytes(10*mib, uint64(i)))
		if err := up.write(256 * kib); err != nil {
			t.Fatal(err)
		}
		// The client stalls: nothing more is sent.
		waitProgress(t, b, id, token, func(s snapshot) bool { return s.State == "uploading" && s.Received >= 256*kib })

		start := time.Now()
		res, body := do(t, http.MethodDelete, b.url("/_upload/.uploads/"+id), map[string]string{tokenHeader: token}, nil)
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE at B: %d %s", res.StatusCode, body)
		}
		res, body = up.response(t)
		latency := time.Since(start)
		latencies = append(latencies, latency)
		if res.StatusCode != http.StatusConflict {
			t.Fatalf("the uploader at A: %d %s; want 409", res.StatusCode, body)
		}
		assertJSON(t, "the uploader's answer", body, `{"code": "upload-cancelled", "detail": "the upload was cancelled"}`)
		if latency >= time.Second {
			t.Errorf("the uploader at A was answered %v after the DELETE at B; want under 1s", latency)
		}
		s, raw := progressOf(t, cc, id, token)
		if s.State != "cancelled" || s.Status != 409 || s.Code != "upload-cancelled" || s.Received < 256*kib {
			t.Errorf("progress at C after the cancel: %s", raw)
		}
		// A second cancel, at C, finds it finished.
		res, body = do(t, http.MethodDelete, cc.url("/_upload/.uploads/"+id), map[string]string{tokenHeader: token}, nil)
		if res.StatusCode != http.StatusConflict {
			t.Errorf("second DELETE at C: %d %s; want 409", res.StatusCode, body)
		}
		assertJSON(t, "second DELETE at C", body, `{"code": "upload-finished", "detail": "the upload has finished already"}`)
	}
	// Nothing is stored, and no temp file stays.
	for deadline := time.Now().Add(5 * time.Second); ; {
		files := storedFiles(t, c.root)
		if len(files) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("files left after the cancelled uploads: %s", strings.Join(files, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(latencies)
	t.Logf("cancel latency (DELETE at B sent -> answer at A's client): min %v, median %v, max %v",
		latencies[0], latencies[len(latencies)/2], latencies[len(latencies)-1])
}
