// Package locktest is the contract every lock.Locker passes: the tests of
// each implementation call Run with a way to make lockers that share their
// locks (two processes of one site, or one process twice).
package locktest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
)

// wait bounds every wait of the contract: a release request must reach the
// holder, and a freed lock its waiter, well within it.
const wait = 5 * time.Second

// Run runs the contract against lockers made by newLocker. Every locker it
// returns must share its locks with the others (the same process, or the
// same shared store under the same key prefix).
func Run(t *testing.T, newLocker func(t *testing.T) lock.Locker) {
	t.Run("free lock is taken at once", func(t *testing.T) {
		l := newLocker(t)
		held := mustLock(t, l, "a", nil)
		mustUnlock(t, held)
	})

	t.Run("unlock twice", func(t *testing.T) {
		held := mustLock(t, newLocker(t), "a", nil)
		mustUnlock(t, held)
		if err := held.Unlock(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("second Unlock: %v, want ErrNotHeld", err)
		}
	})

	t.Run("uploads are independent", func(t *testing.T) {
		l := newLocker(t)
		a := mustLock(t, l, "a", func() { t.Error("a asked to release by a lock of b") })
		b := mustLock(t, l, "b", nil)
		mustUnlock(t, b)
		mustUnlock(t, a)
	})

	t.Run("take-over asks the holder and waits for it", func(t *testing.T) {
		first, second := newLocker(t), newLocker(t)
		asked := make(chan struct{}, 16)
		held := mustLock(t, first, "u", func() { asked <- struct{}{} })
		var unlockedAt atomic.Int64
		go func() {
			select {
			case <-asked:
			case <-time.After(wait):
				t.Error("the holder was not asked to release")
			}
			time.Sleep(50 * time.Millisecond) // the holder saves what it got
			unlockedAt.Store(time.Now().UnixNano())
			mustUnlock(t, held)
		}()
		next := mustLock(t, second, "u", nil)
		if unlockedAt.Load() == 0 {
			t.Fatal("the second Lock returned before the holder unlocked")
		}
		if next.Token() <= held.Token() {
			t.Errorf("token %d after %d: fencing tokens must grow", next.Token(), held.Token())
		}
		mustUnlock(t, next)
	})

	t.Run("hold waits without asking the holder", func(t *testing.T) {
		first, second := newLocker(t), newLocker(t)
		held := mustLock(t, first, "u", func() { t.Error("the holder was asked to release by Hold") })
		got := make(chan lock.Lock, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			h, err := second.Hold(ctx, "u")
			if err != nil {
				t.Errorf("Hold: %v", err)
			}
			got <- h
		}()
		select {
		case <-got:
			t.Fatal("Hold returned while the lock was held")
		case <-time.After(300 * time.Millisecond):
		}
		mustUnlock(t, held)
		var h lock.Lock
		select {
		case h = <-got:
		case <-time.After(wait):
			t.Fatal("Hold did not return once the lock was freed")
		}
		if h == nil {
			return
		}
		if h.Token() <= held.Token() {
			t.Errorf("token %d after %d: fencing tokens must grow", h.Token(), held.Token())
		}
		// A Lock waits for the holding, which cannot be asked to let go.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if l, err := first.Lock(ctx, "u", nil); !errors.Is(err, context.DeadlineExceeded) {
			if l != nil {
				l.Unlock(context.Background())
			}
			t.Fatalf("Lock of a held upload: %v, want DeadlineExceeded", err)
		}
		mustUnlock(t, h)
	})

	t.Run("waiting ends with the context", func(t *testing.T) {
		l := newLocker(t)
		held := mustLock(t, l, "u", func() {}) // asked, never lets go
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if got, err := l.Lock(ctx, "u", nil); !errors.Is(err, context.DeadlineExceeded) {
			if got != nil {
				got.Unlock(context.Background())
			}
			t.Fatalf("Lock of a held upload with a short context: %v, want DeadlineExceeded", err)
		}
		mustUnlock(t, held)
		// The abandoned wait left nothing behind: the lock is free.
		mustUnlock(t, mustLock(t, l, "u", nil))
	})

	t.Run("one writer at a time under contention", func(t *testing.T) {
		lockers := []lock.Locker{newLocker(t), newLocker(t), newLocker(t)}
		var inside atomic.Int32
		var last atomic.Uint64
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stop := make(chan struct{})
				var once sync.Once
				held := mustLock(t, lockers[i%len(lockers)], "hot", func() { once.Do(func() { close(stop) }) })
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				if tok := held.Token(); tok <= last.Load() {
					t.Errorf("token %d not above the previous holder's %d", tok, last.Load())
				} else {
					last.Store(tok)
				}
				select { // write until asked to stop, or a short while
				case <-stop:
				case <-time.After(20 * time.Millisecond):
				}
				inside.Add(-1)
				mustUnlock(t, held)
			}()
		}
		wg.Wait()
	})
}

func mustLock(t *testing.T, l lock.Locker, id string, release func()) lock.Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	held, err := l.Lock(ctx, id, release)
	if err != nil {
		t.Fatalf("Lock(%q): %v", id, err)
	}
	return held
}

func mustUnlock(t *testing.T, held lock.Lock) {
	t.Helper()
	if err := held.Unlock(context.Background()); err != nil {
		panic(fmt.Sprintf("Unlock: %v", err)) // also called from goroutines
	}
}
