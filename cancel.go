package reflexupload

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// Errors of progress and cancel requests.
var (
	errUploadCancelled = &uploadError{Status: http.StatusConflict, Code: "upload-cancelled", Detail: "the upload was cancelled"}
	errUploadNotFound  = &uploadError{Status: http.StatusNotFound, Code: "upload-not-found", Detail: "no upload in flight has this id"}
	errUploadFinished  = &uploadError{Status: http.StatusConflict, Code: "upload-finished", Detail: "the upload has finished already"}
	errUploadIDInUse   = &uploadError{Status: http.StatusConflict, Code: "upload-id-in-use", Detail: "an upload with this id is in flight"}
	errInvalidUploadID = &uploadError{Status: http.StatusBadRequest, Code: "invalid-request", Detail: "upload id must be 1 to 128 letters, digits, _ or -"}
)

// Causes with which an upload request's context ends early.
var (
	// errCancelled: the upload was cancelled (DELETE, tus termination).
	errCancelled = progress.ErrCancelled
	// errInterrupted: a newer request for the same tus upload took over.
	errInterrupted = errors.New("upload interrupted by a newer request")
	// errShuttingDown: the process is exiting; a tus upload resumes after.
	errShuttingDown = errors.New("server shutting down")
	// errPastLength: a tus chunk goes past the upload's length.
	errPastLength = errors.New("chunk past the upload's length")
)

// serveDelete answers DELETE {prefix}/.uploads/{id}. With Tus-Resumable it
// is tus termination and concerns only a resumable upload. Without it, it
// is the cancel of any upload by its id, as clients that do not speak tus
// send it: the requester's resumable upload of that id is terminated, else
// the requester's standard upload in flight is cancelled. Nothing is done
// for, or told about, another owner's upload: the owner check comes first.
func (h *Handler) serveDelete(w http.ResponseWriter, r *http.Request, id string) error {
	if r.Header.Get("Tus-Resumable") != "" {
		return h.serveTusDelete(w, r, id)
	}
	if _, err := h.loadOwned(r, id); err == nil {
		return h.serveTusDelete(w, r, id)
	}
	return h.serveCancel(w, r, id)
}

// serveCancel answers DELETE {prefix}/.uploads/{id} for a standard upload:
// it ends an upload that is still being received. The upload's body read is
// stopped at once (its read deadline is set to now), without waiting for the
// client to send more; the upload then removes its temp files and answers
// its client with 409 upload-cancelled.
func (h *Handler) serveCancel(w http.ResponseWriter, r *http.Request, id string) error {
	key := h.requestKey(r, id)
	snap, ok, err := h.root.progress.Lookup(r.Context(), key)
	switch {
	case err != nil:
		return h.refuse(w, err)
	case !ok || snap.Kind == kindTus:
		// A resumable upload without a state was terminated or expired.
		return h.refuse(w, errUploadNotFound)
	case snap.State != stateUploading:
		return h.refuse(w, errUploadFinished)
	}
	switch err := h.root.progress.Cancel(r.Context(), key); {
	case errors.Is(err, progress.ErrNotFound):
		return h.refuse(w, errUploadNotFound)
	case errors.Is(err, progress.ErrFinished):
		return h.refuse(w, errUploadFinished)
	case err != nil:
		return h.refuse(w, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// readControl owns the read deadline of one upload request. It pushes the
// deadline forward while bytes arrive (an idle client is dropped, a slow one
// is not), and when the request's context ends with errCancelled,
// errInterrupted or errShuttingDown it sets the deadline to now, which unblocks a body read in
// progress at once: the way tusd stops an interrupted PATCH.
type readControl struct {
	rc      *http.ResponseController
	idle    time.Duration // 0: no idle deadline
	mu      sync.Mutex
	stopped bool
	pushed  time.Time // when the deadline was last pushed
	stop    func() bool
}

// cancellable makes the context of an upload request cancellable with a
// cause and returns the readControl that enforces it. release must be
// called when the upload ends.
func cancellable(w http.ResponseWriter, r *http.Request, idle time.Duration) (context.Context, context.CancelCauseFunc, *readControl, func()) {
	ctx, cancel := context.WithCancelCause(r.Context())
	c := &readControl{rc: http.NewResponseController(w), idle: idle}
	// A request without a body (HEAD, DELETE) has no read to unblock: a
	// deadline in the past would only end its connection's context, and
	// with it the storage requests it still makes and the next request on
	// the connection.
	bodyless := r.ContentLength == 0 // a server request: -1 is a body of unknown length
	c.stop = context.AfterFunc(ctx, func() {
		if cause := context.Cause(ctx); !bodyless && (errors.Is(cause, errCancelled) || errors.Is(cause, errInterrupted) || errors.Is(cause, errShuttingDown)) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.stopped = true
			_ = c.rc.SetReadDeadline(time.Now())
		}
	})
	c.push()
	return ctx, cancel, c, func() {
		c.stop()
		cancel(nil)
	}
}

// push moves the idle deadline forward, at most once a second.
func (c *readControl) push() {
	if c == nil || c.idle <= 0 {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || now.Sub(c.pushed) < time.Second {
		return
	}
	c.pushed = now
	_ = c.rc.SetReadDeadline(now.Add(c.idle))
}

// watchShutdown makes sure the HTTP server of a tus request stops the tus
// requests in flight when the process exits, at once instead of after
// Caddy's grace period (eternal by default): they save what they received
// and answer 503, and their clients resume on the next start. Standard
// uploads, which cannot resume, are left to the grace period. A config
// reload (the old server shuts down too, the process goes on) stops nothing.
// Only servers of HTTP/1 and HTTP/2 have the hook; a PATCH over HTTP/3 is
// stopped when one of them starts its shutdown.
func (h *Handler) watchShutdown(r *http.Request) {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	root := h.root
	if _, seen := root.servers.LoadOrStore(srv, struct{}{}); seen {
		return
	}
	srv.RegisterOnShutdown(func() {
		root.servers.Delete(srv) // this server is done with
		if caddy.Exiting() {
			root.writing.stopAll(errShuttingDown)
		}
	})
}

// errServerShutdown answers a standard upload cut when the process exits.
var errServerShutdown = &uploadError{Status: http.StatusServiceUnavailable, Code: "server-shutting-down", Detail: "the server is shutting down; the upload was not kept, send it again"}

// maxCutWait bounds how long an exiting process waits for the standard
// uploads it cut to remove their temp files.
const maxCutWait = 5 * time.Second

// cutStandardUploads runs when the process exits, after Caddy's grace
// period: the standard uploads still in flight (which cannot resume) are
// stopped, and the exit waits until they have removed their temp files, so
// that they leave nothing behind. On a config reload it does nothing: the
// old config's uploads go on.
func (h *Handler) cutStandardUploads() {
	if !caddy.Exiting() || h.root == nil {
		return
	}
	busy := h.root.progress.Local(kindMultipart)
	if len(busy) == 0 {
		return
	}
	h.logger.Info("cutting standard uploads at exit", zap.Int("count", len(busy)))
	for _, u := range busy {
		u.Stop(errShuttingDown)
	}
	deadline := time.After(maxCutWait)
	for _, u := range busy {
		select {
		case <-u.Done():
		case <-deadline:
			return
		}
	}
}
