// Package lock is the one-writer rule of resumable uploads: at most one
// request writes to an upload at a time, and a request that wants to write
// asks the one writing to stop rather than waiting for it (a client whose
// connection dropped must not leave its upload locked).
//
// The shape is tusd's Locker with a release request, plus a fencing token:
// every lock taken on an upload carries a token larger than every earlier
// one, so a store can refuse a write from a holder that lost its lock (a
// lease that ran out while it was paused) after another took over.
//
// Memory is the implementation for one process; a shared implementation
// (Redis) lives in its own package and passes the same contract tests
// (package locktest).
package lock

import (
	"context"
	"errors"
)

// ErrNotHeld is returned by Unlock for a lock that was unlocked already or
// lost.
var ErrNotHeld = errors.New("lock not held")

// A Locker hands out the one-writer lock of each upload.
type Locker interface {
	// Lock takes the lock of upload id, waiting until it is free or ctx
	// ends (then it returns ctx's error). While the caller waits, the
	// holder is asked to let go: the release function it gave to Lock is
	// called (at least once per waiting caller, possibly more often), and
	// it should stop writing, keep what it received and Unlock soon.
	// release must not block.
	Lock(ctx context.Context, id string, release func()) (Lock, error)
	// Hold takes the lock of upload id as Lock does, but without asking
	// the holder to let go: it waits until the holder unlocks (or ctx
	// ends). Nobody can ask the holding it returns to let go either: the
	// others wait for its Unlock. A tus final upload holds its partial
	// uploads so while it reads them.
	Hold(ctx context.Context, id string) (Lock, error)
}

// A Lock is one holding of an upload's lock.
type Lock interface {
	// Token is the fencing token of this holding: larger than the token
	// of every earlier holding of the same upload.
	Token() uint64
	// Lost is closed when the lock was lost without Unlock (a shared
	// lock's lease ran out): the holder must stop writing at once. It is
	// nil for a lock that cannot be lost, so that a holder needs no
	// goroutine to watch it.
	Lost() <-chan struct{}
	// Unlock gives the lock up. It returns ErrNotHeld when the lock was
	// unlocked already or lost.
	Unlock(ctx context.Context) error
}
