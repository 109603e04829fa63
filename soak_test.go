package reflexupload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// TestSoak runs 200 concurrent uploads of which a third complete, a third
// are cancelled with DELETE mid-body and a third are cut off by their
// client, then checks that nothing is left: no temp file, no registry entry
// past retention, no goroutine more than before. It prints its figures.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak test is not short; run it without -short")
	}
	root := startSite(t, "reflex_upload {\nroot ROOT\nfsync off\n}")
	reg := registryOf(t, root)
	client.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	const n = 200
	var completed, cancelled, cut, unexpected atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("soak-%d", i)
			size := 64<<10 + rand.IntN(512<<10)
			sent := rand.IntN(size / 2)
			up := startRawUpload(t, "/_upload", http.Header{"X-Progress-Id": {id}}, id+".bin", size, sent)
			defer up.conn.Close()
			switch i % 3 {
			case 0: // completes
				up.send(t, size-sent)
				up.finish(t)
				if res, body := up.response(t); res.StatusCode == http.StatusCreated {
					completed.Add(1)
				} else {
					unexpected.Add(1)
					t.Errorf("%s: %d %s", id, res.StatusCode, body)
				}
			case 1: // cancelled by DELETE once the server has its first bytes
				waitProgress(t, id, func(p progressBody) bool { return p.State == stateUploading && p.Received > int64(sent) })
				if res, _ := deleteUpload(t, id); res.StatusCode != http.StatusNoContent {
					unexpected.Add(1)
					t.Errorf("%s: DELETE %d", id, res.StatusCode)
					return
				}
				if res, _ := up.response(t); res.StatusCode == http.StatusConflict {
					cancelled.Add(1)
				} else {
					unexpected.Add(1)
				}
			case 2: // the client goes away
				waitProgress(t, id, func(p progressBody) bool { return p.State == stateUploading && p.Received > int64(sent) })
				up.conn.Close()
				cut.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	// Every upload ends, and nothing stays on disk but the completed files.
	deadline := time.Now().Add(15 * time.Second)
	var leftovers []string
	for {
		leftovers = leftovers[:0]
		for _, f := range storedFiles(t, root) {
			if strings.HasPrefix(f, reservedDir+"/") {
				leftovers = append(leftovers, f)
			}
		}
		inFlight := 0
		for i := range n {
			if s, ok, _ := reg.progress.Lookup(context.Background(), progress.Key{ID: fmt.Sprintf("soak-%d", i)}); ok && s.State == stateUploading {
				inFlight++
			}
		}
		if len(leftovers) == 0 && inFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the soak: %d temp files (%q…), %d uploads still in flight", len(leftovers), leftovers[:min(3, len(leftovers))], inFlight)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := len(storedFiles(t, root)); got != int(completed.Load()) {
		t.Errorf("%d files stored; want the %d completed uploads", got, completed.Load())
	}

	// Past retention, the registry forgets them all.
	clock := &fakeClock{now: time.Now().Add(2 * progress.DefaultRetention)}
	reg.setClock(clock.Now)
	entries := reg.progress.(*progress.Memory).Len()
	reg.setClock(time.Now)
	if entries != 0 {
		t.Errorf("%d registry entries past retention; want 0", entries)
	}

	// No goroutine growth, once the client's idle connections are closed.
	client.CloseIdleConnections()
	var goroutines int
	for deadline := time.Now().Add(10 * time.Second); ; {
		goroutines = runtime.NumGoroutine()
		if goroutines <= baseline+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if goroutines > baseline+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after the soak:\n%s", baseline, goroutines, buf[:runtime.Stack(buf, true)])
	}
	t.Logf("soak: %d uploads in %v: %d completed, %d cancelled, %d cut off, %d unexpected; "+
		"temp files left 0, registry entries past retention %d, goroutines %d before and %d after",
		n, elapsed.Round(time.Millisecond), completed.Load(), cancelled.Load(), cut.Load(), unexpected.Load(),
		entries, baseline, goroutines)
	if unexpected.Load() > 0 {
		t.Errorf("%d uploads ended unexpectedly", unexpected.Load())
	}
}
