package reflexupload

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// One writer per resumable upload: a request that writes to an upload
// (PATCH, and HEAD and DELETE, which must see every byte a PATCH in flight
// received) takes the upload's lock from the root's lock.Locker, which asks
// the request holding it to let go: that one is stopped with errInterrupted
// (its body read ends at once), keeps what it received and unlocks. A final
// upload reading its partial ones holds them instead (Locker.Hold): it is
// not stopped, and the next request waits for it.
//
// tusRequests keeps what only this process needs to know of its own tus
// requests: which uploads they use (the sweeper leaves those alone) and how
// to stop the one writing to each at the process's exit.
type tusRequests struct {
	mu      sync.Mutex
	uses    map[string]*tusUse
	exiting bool // the process exits: no tus request may write (stopAll)
}

// tusUse is this process's requests that use one upload.
type tusUse struct {
	refs int                     // requests holding or waiting for the lock
	stop context.CancelCauseFunc // the holder's, while one of ours holds it
}

// enter counts a request that uses upload id.
func (t *tusRequests) enter(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uses == nil {
		t.uses = map[string]*tusUse{}
	}
	u := t.uses[id]
	if u == nil {
		u = &tusUse{}
		t.uses[id] = u
	}
	u.refs++
}

// leave undoes enter.
func (t *tusRequests) leave(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u := t.uses[id]; u != nil {
		if u.refs--; u.refs == 0 {
			delete(t.uses, id)
		}
	}
}

// holding records that a request holds upload id's lock, and how to stop
// it (nil: when it lets go). A request that starts holding after the exit
// began is stopped at once.
func (t *tusRequests) holding(id string, stop context.CancelCauseFunc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u := t.uses[id]; u != nil {
		u.stop = stop
	}
	if stop != nil && t.exiting {
		stop(errShuttingDown)
	}
}

// stopAll stops, with cause, every request writing to an upload now and
// every one that becomes a writer from now on: the process is exiting.
func (t *tusRequests) stopAll(cause error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.exiting = true
	for _, u := range t.uses {
		if u.stop != nil {
			u.stop(cause)
		}
	}
}

// busy reports whether a request of this process is using upload id.
func (t *tusRequests) busy(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.uses[id] != nil
}

// writerTurn is a request's turn as the one writer of an upload.
type writerTurn struct {
	ctx    context.Context
	ctl    *readControl
	cancel context.CancelCauseFunc // stops the request, with a cause
	end    func()                  // ends the turn
}

// becomeWriter makes the request the one writer of upload id: the request
// writing now is asked to let go (it is stopped with errInterrupted) and
// waited for.
func (h *Handler) becomeWriter(w http.ResponseWriter, r *http.Request, id string, idle time.Duration) (*writerTurn, error) {
	h.watchShutdown(r)
	ctx, cancel, ctl, release := cancellable(w, r, idle)
	reqs := &h.root.writing
	reqs.enter(id)
	// The wait outlives a client that goes away meanwhile, as the request
	// would go on after it anyway.
	held, err := h.root.locks.Lock(context.WithoutCancel(ctx), id, func() { cancel(errInterrupted) })
	if err != nil {
		reqs.leave(id)
		release()
		return nil, err
	}
	reqs.holding(id, cancel)
	if ch := held.Lost(); ch != nil {
		go func() {
			select {
			case <-ch:
				cancel(errInterrupted) // a shared lock's lease ran out: another may write
			case <-ctx.Done():
			}
		}()
	}
	return &writerTurn{ctx: ctx, ctl: ctl, cancel: cancel, end: func() {
		reqs.holding(id, nil)
		_ = held.Unlock(context.WithoutCancel(ctx))
		reqs.leave(id)
		release()
	}}, nil
}

// takeUpload makes the request the writer of upload id (becomeWriter) once
// the upload is found to be the requester's, running before in between,
// and loads its state as its writer sees it. The errors are answers.
func (h *Handler) takeUpload(w http.ResponseWriter, r *http.Request, id string, before func() error) (*tus.Info, *writerTurn, error) {
	if _, err := h.loadOwned(r, id); err != nil {
		return nil, nil, tusLoadError(err)
	}
	if before != nil {
		if err := before(); err != nil {
			return nil, nil, err
		}
	}
	turn, err := h.becomeWriter(w, r, id, 0)
	if err != nil {
		return nil, nil, err
	}
	info, err := h.loadOwned(r, id)
	if err != nil {
		turn.end()
		return nil, nil, tusLoadError(err)
	}
	return info, turn, nil
}

// holdUploads makes the request the writer of the uploads ids without
// stopping the requests that use them now (it waits for them), in sorted
// order so that two final uploads over some of the same partial uploads
// cannot wait for each other in a circle. It returns the function that
// lets them go.
func (h *Handler) holdUploads(r *http.Request, ids []string) (func(), error) {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	ctx := context.WithoutCancel(r.Context())
	reqs := &h.root.writing
	var held []lock.Lock
	letGo := func() {
		for i, l := range held {
			_ = l.Unlock(ctx)
			reqs.leave(ids[i])
		}
	}
	for _, id := range ids {
		reqs.enter(id)
		l, err := h.root.locks.Hold(ctx, id)
		if err != nil {
			reqs.leave(id)
			letGo()
			return nil, err
		}
		held = append(held, l)
	}
	return letGo, nil
}
