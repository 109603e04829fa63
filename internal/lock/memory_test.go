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
