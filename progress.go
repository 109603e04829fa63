package reflexupload

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// Upload states, as nginx-upload-progress names them.
const (
	stateStarting  = progress.StateStarting // not seen (yet)
	stateUploading = progress.StateUploading
	stateDone      = progress.StateDone
	stateError     = progress.StateError
	stateCancelled = progress.StateCancelled
)

// Kinds of upload, for progress and metrics.
const (
	kindMultipart = progress.KindMultipart
	kindTus       = progress.KindTus
)

// validID is the form of a client-chosen upload id (X-Progress-ID).
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// filesJSON is the progress record of stored files: nil for none.
func filesJSON(files []storedFile) json.RawMessage {
	if len(files) == 0 {
		return nil
	}
	b, _ := json.Marshal(files)
	return b
}

// requestKey is the registry key a progress or cancel request names.
func (h *Handler) requestKey(r *http.Request, id string) progress.Key {
	return progress.Key{Owner: h.ownerOf(r), ID: id}
}

// serveProgress answers GET {prefix}/.uploads/{id}: the upload's progress
// as JSON, or as server-sent events until its final state.
func (h *Handler) serveProgress(w http.ResponseWriter, r *http.Request, id string) error {
	key := h.requestKey(r, id)
	reg := h.root.progress
	w.Header().Set("Cache-Control", "no-store")
	if !acceptsEventStream(r) {
		body, err := h.progressOf(r, key)
		if err != nil {
			return h.refuse(w, err)
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(body)
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
		changed, stop := reg.Watch(key)
		more := h.sendProgress(w, rc, r, key, &last) && h.waitProgress(r, changed, tick.C)
		stop()
		if !more {
			return nil
		}
	}
}

// sendProgress sends the upload's progress as an event, when it changed,
// and reports whether the stream goes on: not after a final state, nor once
// the client went away.
func (h *Handler) sendProgress(w http.ResponseWriter, rc *http.ResponseController, r *http.Request, key progress.Key, last *[]byte) bool {
	body, err := h.progressOf(r, key)
	if err != nil {
		return false
	}
	data, _ := json.Marshal(body)
	if !bytes.Equal(data, *last) {
		if _, err := w.Write(append(append([]byte("data: "), data...), '\n', '\n')); err != nil {
			return false // the client went away
		}
		if err := rc.Flush(); err != nil {
			return false
		}
		*last = data
	}
	return !progress.Final(body.State)
}

// waitProgress waits for a change, the next tick, or the end of the stream
// (false).
func (h *Handler) waitProgress(r *http.Request, changed <-chan struct{}, tick <-chan time.Time) bool {
	select {
	case <-r.Context().Done():
		return false
	case <-h.ctx.Done():
		return false
	case <-changed:
	case <-tick:
	}
	return true
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
func (h *Handler) progressOf(r *http.Request, key progress.Key) (progress.Snapshot, error) {
	snap, ok, err := h.root.progress.Lookup(r.Context(), key)
	if err != nil || ok {
		return snap, err
	}
	if info, err := h.loadOwned(r, key.ID); err == nil && !h.expired(info) {
		b := progress.Snapshot{ID: key.ID, Kind: kindTus, State: stateUploading, Received: info.Offset, StartedAt: &info.Created}
		if info.Length >= 0 {
			b.Size = &info.Length
		}
		if info.Done && info.Stored != nil {
			b.State, b.Files = stateDone, filesJSON([]storedFile{*info.Stored})
		}
		return b, nil
	}
	return progress.Snapshot{ID: key.ID, State: stateStarting}, nil
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
