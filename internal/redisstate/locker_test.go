package redisstate_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reflexupload/caddy-reflex-upload/internal/enginetest"
	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
	"github.com/reflexupload/caddy-reflex-upload/internal/lock/locktest"
	"github.com/reflexupload/caddy-reflex-upload/internal/redisstate"
)

// lease is short in the tests, so that a dead holder's lock frees quickly.
const lease = 900 * time.Millisecond

// newLocker makes a Locker with a client of its own (an instance of its
// own) on the Redis at addr.
func newLocker(t *testing.T, addr, prefix string) *redisstate.Locker {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: addr})
	l, err := redisstate.NewLocker(context.Background(), client, prefix, lease)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		client.Close()
	})
	return l
}

func TestLockerContract(t *testing.T) {
	addr := enginetest.Redis(t)
	locktest.Run(t, func(t *testing.T) lock.Locker { return newLocker(t, addr, t.Name()+":") })
}

func mustLock(t *testing.T, l lock.Locker, id string, release func()) lock.Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held, err := l.Lock(ctx, id, release)
	if err != nil {
		t.Fatalf("Lock(%q): %v", id, err)
	}
	return held
}

// A release request reaches a holder that missed the message: it reads the
// flag when it renews its lease.
func TestReleaseRequestWithoutMessage(t *testing.T) {
	addr := enginetest.Redis(t)
	a, b := newLocker(t, addr, "p:"), newLocker(t, addr, "p:")
	a.Deafen()
	asked := make(chan time.Time, 8)
	held := mustLock(t, a, "u", func() { asked <- time.Now() })
	go func() {
		<-asked
		held.Unlock(context.Background())
	}()
	start := time.Now()
	next := mustLock(t, b, "u", nil)
	took := time.Since(start)
	if took > 2*lease {
		t.Errorf("the take-over took %v; the flag should reach the holder within a third of the %v lease", took, lease)
	}
	next.Unlock(context.Background())
}

// A holder that stops renewing (its instance died) keeps the lock for one
// lease; then another instance takes it with a larger token, and the old
// holder learns it lost the lock: its Unlock says so and touches nothing.
func TestDeadHolderLeaseRunsOut(t *testing.T) {
	addr := enginetest.Redis(t)
	a, b := newLocker(t, addr, "p:"), newLocker(t, addr, "p:")
	old := mustLock(t, a, "u", func() {}) // asked, never lets go
	a.StopRenewing(old)
	start := time.Now()
	next := mustLock(t, b, "u", nil)
	if took := time.Since(start); took < lease/2 {
		t.Errorf("the lock of a silent holder was taken after %v, before its %v lease ran out", took, lease)
	}
	if next.Token() <= old.Token() {
		t.Errorf("token %d after %d: fencing tokens must grow", next.Token(), old.Token())
	}
	if err := old.Unlock(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Unlock by the holder whose lease ran out: %v, want ErrNotHeld", err)
	}
	// The new holder still holds it: a third instance must wait.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := newLocker(t, addr, "p:").Lock(ctx, "u", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock while the new holder holds it: %v, want DeadlineExceeded", err)
	}
	if err := next.Unlock(context.Background()); err != nil {
		t.Errorf("Unlock by the new holder: %v", err)
	}
}

// A holder whose lock was taken from it in Redis (its lease ran out while
// it was paused) is told at its next renewal: Lost is closed.
func TestLostIsSignalled(t *testing.T) {
	addr := enginetest.Redis(t)
	a := newLocker(t, addr, "p:")
	held := mustLock(t, a, "u", nil)
	raw := redis.NewClient(&redis.Options{Addr: addr})
	defer raw.Close()
	if err := raw.Del(context.Background(), "p:lock:u").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.Lost():
	case <-time.After(2 * lease):
		t.Fatalf("Lost not closed %v after the lock was gone", 2*lease)
	}
	if err := held.Unlock(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Unlock of a lost lock: %v, want ErrNotHeld", err)
	}
}

// Nothing stays in Redis for an upload once its lock is given up, but the
// shared fencing counter.
func TestNoKeysLeft(t *testing.T) {
	addr := enginetest.Redis(t)
	a, b := newLocker(t, addr, "p:"), newLocker(t, addr, "p:")
	held := mustLock(t, a, "u", func() {})
	go func() {
		time.Sleep(100 * time.Millisecond)
		held.Unlock(context.Background())
	}()
	mustLock(t, b, "u", nil).Unlock(context.Background())
	raw := redis.NewClient(&redis.Options{Addr: addr})
	defer raw.Close()
	keys, err := raw.Keys(context.Background(), "p:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "p:lock:fence" {
		t.Errorf("keys left: %q, want only p:lock:fence", keys)
	}
}
