package lock_test

import (
	"context"
	"testing"

	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
	"github.com/reflexupload/caddy-reflex-upload/internal/lock/locktest"
)

func TestMemoryContract(t *testing.T) {
	shared := &lock.Memory{}
	locktest.Run(t, func(*testing.T) lock.Locker { return shared })
	if n := shared.Len(); n != 0 {
		t.Errorf("%d entries left after every lock was given up, want 0", n)
	}
}

func TestMemoryForgetsFreeUploads(t *testing.T) {
	var m lock.Memory
	for _, id := range []string{"a", "b", "c"} {
		held, err := m.Lock(context.Background(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := held.Unlock(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.Len(); n != 0 {
		t.Errorf("%d entries after three uploads were locked and unlocked, want 0", n)
	}
}

// A process's own lock cannot be lost, so it has no Lost channel: its
// holder (a tus PATCH) then starts no goroutine to watch one, which would
// hold a stack for every upload in flight.
func TestMemoryLockCannotBeLost(t *testing.T) {
	var m lock.Memory
	held, err := m.Lock(context.Background(), "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(context.Background())
	if ch := held.Lost(); ch != nil {
		t.Errorf("Lost() = %v, want nil for a lock that cannot be lost", ch)
	}
}
