package reflexupload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
)

// Upload states, as nginx-upload-progress names them.
const (
	stateStarting  = "starting" // not seen (yet)
	stateUploading = "uploading"
	stateDone      = "done"
	stateError     = "error"
	stateCancelled = "cancelled"
)

// Kinds of upload, for progress and metrics.
const (
	kindMultipart = "multipart"
	kindTus       = "tus"
)

// Defaults of the progress options.
const (
	defaultRetention   = 60 * time.Second
	defaultMaxFinished = 10000
)

// validID is the form of a client-chosen upload id (X-Progress-ID).
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// errIDInUse is what registry.start returns for an id already in flight.
var errIDInUse = errors.New("upload id is in use by an upload in flight")

// progressKey names an upload in the registry: uploads made with different
// owner values never see each other, even under the same id.
type progressKey struct{ owner, id string }

// progressEntry is one upload in flight or recently finished.
type progressEntry struct {
	key      progressKey
	kind     string
	size     int64 // -1 when unknown
	started  time.Time
	received func() int64            // live byte count while in flight
	counter  *atomic.Int64           // what received reads, for a tus upload
	cancel   context.CancelCauseFunc // ends the upload's request

	mu       sync.Mutex // guards the rest
	state    string
	finished time.Time
	final    int64 // bytes received, once finished
	status   int   // HTTP status, on error
	code     string
	files    []storedFile
}

// registry holds the uploads in flight and those finished within the
// retention time. Its memory is bounded: finished entries are dropped after
// retention, and beyond maxFinished the oldest go first. One registry serves
// every handler of an upload root and outlives config reloads (it belongs to
// the uploadRoot, which lives in a UsagePool).
type registry struct {
	mu          sync.Mutex
	now         func() time.Time // replaceable clock
	retention   time.Duration
	maxFinished int
	entries     map[progressKey]*progressEntry
	finished    []*progressEntry // in the order they finished; oldest first
	changed     chan struct{}    // closed and replaced on every change
}

func newRegistry() *registry {
	return &registry{
		now:         time.Now,
		retention:   defaultRetention,
		maxFinished: defaultMaxFinished,
		entries:     map[progressKey]*progressEntry{},
		changed:     make(chan struct{}),
	}
}

// clock reads the registry's clock.
func (g *registry) clock() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.now()
}

// setClock replaces the clock (tests).
func (g *registry) setClock(now func() time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now = now
}

// configure sets the retention and the cap, from the handler provisioned last.
func (g *registry) configure(retention time.Duration, maxFinished int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.retention, g.maxFinished = retention, maxFinished
	g.pruneLocked()
}

// start registers an upload in flight. An id in flight under the same owner
// is refused with errIDInUse; a finished one is replaced.
func (g *registry) start(e *progressEntry) error {
	if g.attach(e) != e {
		return errIDInUse
	}
	return nil
}

// attach returns the entry of an upload in flight under e's key, or
// registers e as in flight (a tus upload spans many requests, and after a
// restart its entry is made anew on the first request that names it).
func (g *registry) attach(e *progressEntry) *progressEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked()
	if old, ok := g.entries[e.key]; ok && old.snapshotState() == stateUploading {
		return old
	}
	e.started = g.now()
	e.state = stateUploading
	g.entries[e.key] = e
	g.notifyLocked()
	return e
}

// finish records the end of an upload: done with its files, or a failure.
func (g *registry) finish(e *progressEntry, state string, status int, code string, files []storedFile) {
	final := e.received()
	g.mu.Lock()
	defer g.mu.Unlock()
	e.mu.Lock()
	e.state, e.finished, e.final = state, g.now(), final
	e.status, e.code, e.files = status, code, files
	e.mu.Unlock()
	if g.entries[e.key] == e {
		g.finished = append(g.finished, e)
	}
	g.pruneLocked()
	g.notifyLocked()
}

// expire ends, as expired, the uploads in flight under id (of any owner):
// a resumable upload that nobody finished.
func (g *registry) expire(id string) {
	var expired []*progressEntry
	g.mu.Lock()
	for k, e := range g.entries {
		if k.id == id && e.snapshotState() == stateUploading {
			expired = append(expired, e)
		}
	}
	g.mu.Unlock()
	for _, e := range expired {
		g.finish(e, stateError, http.StatusGone, "upload-expired", nil)
	}
}

// lookup finds an upload by owner and id.
func (g *registry) lookup(key progressKey) *progressEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked()
	return g.entries[key]
}

// watch returns a channel closed at the next change.
func (g *registry) watch() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// size reports how many entries are held (for tests and soak figures).
func (g *registry) size() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked()
	return len(g.entries)
}

// pruneLocked drops the finished entries past retention, and the oldest
// ones beyond the cap.
func (g *registry) pruneLocked() {
	cutoff := g.now().Add(-g.retention)
	for len(g.finished) > 0 {
		e := g.finished[0]
		if len(g.finished) <= g.maxFinished && e.finishedAt().After(cutoff) {
			break
		}
		g.finished[0] = nil
		g.finished = g.finished[1:]
		if g.entries[e.key] == e {
			delete(g.entries, e.key)
		}
	}
	if cap(g.finished) > 64 && len(g.finished) < cap(g.finished)/4 {
		g.finished = append([]*progressEntry(nil), g.finished...)
	}
}

func (g *registry) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

func (e *progressEntry) snapshotState() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state
}

func (e *progressEntry) finishedAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.finished
}

// progressBody is the progress JSON: a superset of nginx-upload-progress.
type progressBody struct {
	ID        string       `json:"id"`
	Kind      string       `json:"kind,omitempty"`
	State     string       `json:"state"`
	Received  int64        `json:"received"`
	Size      *int64       `json:"size,omitempty"`
	Speed     int64        `json:"speed"` // bytes per second, averaged over the upload
	StartedAt *time.Time   `json:"started_at,omitempty"`
	Status    int          `json:"status,omitempty"` // the HTTP status, on error
	Code      string       `json:"code,omitempty"`   // the error code, on error
	Files     []storedFile `json:"files,omitempty"`  // on done
}

// snapshot describes the upload now.
func (e *progressEntry) snapshot(now time.Time) progressBody {
	e.mu.Lock()
	defer e.mu.Unlock()
	b := progressBody{ID: e.key.id, Kind: e.kind, State: e.state, Status: e.status, Code: e.code, Files: e.files}
	started := e.started
	b.StartedAt = &started
	end := now
	if e.state == stateUploading {
		b.Received = e.received()
	} else {
		b.Received, end = e.final, e.finished
	}
	if e.size >= 0 {
		size := e.size
		b.Size = &size
	}
	if secs := end.Sub(e.started).Seconds(); secs > 0 {
		b.Speed = int64(float64(b.Received) / secs)
	}
	return b
}

// final reports whether a state is the last one of an upload.
func final(state string) bool {
	return state == stateDone || state == stateError || state == stateCancelled
}

// requestKey is the registry key a progress or cancel request names.
func (h *Handler) requestKey(r *http.Request, id string) progressKey {
	return progressKey{owner: h.ownerOf(r), id: id}
}

// serveProgress answers GET {prefix}/.uploads/{id}: the upload's progress
// as JSON, or as server-sent events until its final state.
func (h *Handler) serveProgress(w http.ResponseWriter, r *http.Request, id string) error {
	key := h.requestKey(r, id)
	reg := h.root.progress
	w.Header().Set("Cache-Control", "no-store")
	if !acceptsEventStream(r) {
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(h.progressOf(r, reg, key))
	}

	if eventStreams.Add(1) > maxEventStreams {
		eventStreams.Add(-1)
		return h.refuse(w, errServerBusy.with(nil, "too many progress event streams are open; poll instead, or try again later"))
	}
	defer eventStreams.Add(-1)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	tick := time.NewTicker(sseInterval)
	defer tick.Stop()
	var last []byte
	for {
		changed := reg.watch()
		body := h.progressOf(r, reg, key)
		data, _ := json.Marshal(body)
		if !bytes.Equal(data, last) {
			if _, err := w.Write(append(append([]byte("data: "), data...), '\n', '\n')); err != nil {
				return nil // the client went away
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
			last = data
		}
		if final(body.State) {
			return nil
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-h.ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// sseInterval is how often an event stream looks at a live upload's count.
const sseInterval = 250 * time.Millisecond

// maxEventStreams bounds the progress event streams open at once in this
// process; past it a stream is refused with 503 server-busy (the JSON
// answer stays available).
const maxEventStreams = 10000

// eventStreams counts the progress event streams open in this process.
var eventStreams atomic.Int64

// progressOf describes an upload, or says "starting" for one not seen. A
// resumable upload that the registry does not hold (Caddy restarted since
// its last request) is described from its state on disk.
func (h *Handler) progressOf(r *http.Request, reg *registry, key progressKey) progressBody {
	if e := reg.lookup(key); e != nil {
		return e.snapshot(reg.clock())
	}
	if info, err := h.loadOwned(r, key.id); err == nil && !h.expired(info) {
		b := progressBody{ID: key.id, Kind: kindTus, State: stateUploading, Received: info.Offset, StartedAt: &info.Created}
		if info.Length >= 0 {
			b.Size = &info.Length
		}
		if info.Done && info.Stored != nil {
			b.State, b.Files = stateDone, []storedFile{*info.Stored}
		}
		return b
	}
	return progressBody{ID: key.id, State: stateStarting}
}

// acceptsEventStream reports whether the client asks for server-sent events.
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for t := range strings.SplitSeq(v, ",") {
			if filecheck.BareType(t) == "text/event-stream" {
				return true
			}
		}
	}
	return false
}
