package redisstate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reflexupload/caddy-reflex-upload/internal/enginetest"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress/progresstest"
	"github.com/reflexupload/caddy-reflex-upload/internal/redisstate"
)

// progressLease is short in the tests, so that a dead instance's uploads
// go quickly; the write interval is the real one.
const progressLease = 900 * time.Millisecond

// newProgress makes a Progress with a client of its own (an instance of
// its own) on the Redis at addr.
func newProgress(t *testing.T, addr, prefix string, o redisstate.ProgressOptions) *redisstate.Progress {
	t.Helper()
	if o.Lease == 0 {
		o.Lease = progressLease
	}
	client := redis.NewClient(&redis.Options{Addr: addr})
	p, err := redisstate.NewProgress(context.Background(), client, prefix, o)
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Bool
	t.Cleanup(func() {
		if !closed.Swap(true) {
			p.Close()
		}
		client.Close()
	})
	return p
}

func rawClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProgressContract(t *testing.T) {
	addr := enginetest.Redis(t)
	progresstest.Run(t, func(t *testing.T) progress.Registry {
		return newProgress(t, addr, t.Name()+":", redisstate.ProgressOptions{})
	})
}

// Three instances on one Redis: progress written on A is read on B and C,
// B's change signal fires, and a cancel sent on C stops A's request.
func TestProgressThreeInstances(t *testing.T) {
	addr := enginetest.Redis(t)
	a, b, c := newProgress(t, addr, "p:", redisstate.ProgressOptions{}),
		newProgress(t, addr, "p:", redisstate.ProgressOptions{}),
		newProgress(t, addr, "p:", redisstate.ProgressOptions{})
	ctx := context.Background()
	key := progress.Key{Owner: "token", ID: "big"}

	started, stopStart := b.Watch(key)
	defer stopStart()
	cancelledAt := make(chan time.Time, 1)
	up, err := a.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: 1 << 20,
		Cancel: func(cause error) {
			if errors.Is(cause, progress.ErrCancelled) {
				cancelledAt <- time.Now()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(time.Second):
		t.Fatal("B's watch did not fire within 1s of the start on A")
	}
	for _, n := range []int64{1000, 5000, 9000} {
		up.Counter().Store(n)
		for name, r := range map[string]progress.Registry{"B": b, "C": c} {
			s := waitFor(t, r, key, func(s progress.Snapshot) bool { return s.Received == n }, time.Second)
			if s.State != progress.StateUploading || *s.Size != 1<<20 {
				t.Errorf("%s reads %+v", name, s)
			}
		}
	}

	changed, stop := b.Watch(key)
	defer stop()
	sent := time.Now()
	if err := c.Cancel(ctx, key); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-cancelledAt:
		latency := at.Sub(sent)
		t.Logf("cancel sent on C reached the request on A after %v", latency)
		if latency > time.Second {
			t.Errorf("cancel took %v, want under 1s", latency)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a cancel sent on C did not reach A's request within 2s")
	}
	select {
	case <-changed:
	case <-time.After(time.Second):
		t.Error("B's watch did not fire within 1s of the cancel")
	}
	if err := up.Finish(ctx, progress.End{State: progress.StateCancelled, Status: 409, Code: "upload-cancelled"}); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, c, key, func(s progress.Snapshot) bool { return s.State == progress.StateCancelled }, time.Second)
	if s.Received != 9000 || s.Code != "upload-cancelled" || s.Status != 409 {
		t.Errorf("C reads %+v after the end", s)
	}
	if n := len(b.Local(progress.KindMultipart)) + len(c.Local(progress.KindMultipart)); n != 0 {
		t.Errorf("B and C list %d local uploads; A received it", n)
	}
}

// A cancel whose message the receiving instance missed lands through the
// flag at its next write.
func TestProgressCancelMissedMessage(t *testing.T) {
	addr := enginetest.Redis(t)
	a, c := newProgress(t, addr, "p:", redisstate.ProgressOptions{}), newProgress(t, addr, "p:", redisstate.ProgressOptions{})
	a.Deafen()
	ctx := context.Background()
	for _, kind := range []string{progress.KindMultipart, progress.KindTus} {
		key := progress.Key{ID: "deaf-" + kind}
		cancelledAt := make(chan time.Time, 1)
		up, err := a.Attach(ctx, key, progress.Begin{Kind: kind, Size: -1,
			Cancel: func(error) { cancelledAt <- time.Now() }})
		if err != nil {
			t.Fatal(err)
		}
		sent := time.Now()
		if err := c.Cancel(ctx, key); err != nil {
			t.Fatal(err)
		}
		select {
		case at := <-cancelledAt:
			t.Logf("%s: cancel without its message reached the request after %v", kind, at.Sub(sent))
			if at.Sub(sent) > time.Second {
				t.Errorf("%s: the flag took %v, want under 1s", kind, at.Sub(sent))
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: a cancel whose message was missed did not land within 2s", kind)
		}
		up.Finish(ctx, progress.End{State: progress.StateCancelled})
	}
}

// An instance that dies mid-upload stops writing: its upload's record goes
// within a lease (readers then answer "starting", or, for a resumable
// upload, what its store says), and the id can be used again.
func TestProgressDeadWriter(t *testing.T) {
	addr := enginetest.Redis(t)
	a := newProgress(t, addr, "p:", redisstate.ProgressOptions{})
	b := newProgress(t, addr, "p:", redisstate.ProgressOptions{})
	ctx := context.Background()
	key := progress.Key{ID: "orphan"}
	up, err := a.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	up.Counter().Store(42)
	waitFor(t, b, key, func(s progress.Snapshot) bool { return s.Received == 42 }, time.Second)
	time.Sleep(2 * progressLease) // renewed while A lives
	if _, ok, _ := b.Lookup(ctx, key); !ok {
		t.Fatalf("the upload of a live instance was forgotten after %v", 2*progressLease)
	}
	if _, err := b.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: -1}); !errors.Is(err, progress.ErrIDInUse) {
		t.Fatalf("Start on B while A receives: %v, want ErrIDInUse", err)
	}
	a.Close() // dies: no more writes
	died := time.Now()
	for {
		_, ok, err := b.Lookup(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Since(died) > 2*progressLease {
			t.Fatalf("the upload of a dead instance still reads as in flight %v after", time.Since(died))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the upload of a dead instance went %v after the instance stopped (lease %v)", time.Since(died), progressLease)
	again, err := b.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
	if err != nil {
		t.Fatalf("Start on B after A died: %v", err)
	}
	again.Finish(ctx, progress.End{State: progress.StateDone})
}

// A resumable upload between requests is not a dead writer's: its record
// stays for Idle, not one lease.
func TestProgressParkedOutlivesLease(t *testing.T) {
	addr := enginetest.Redis(t)
	a := newProgress(t, addr, "p:", redisstate.ProgressOptions{Idle: 10 * time.Second})
	b := newProgress(t, addr, "p:", redisstate.ProgressOptions{Idle: 10 * time.Second})
	ctx := context.Background()
	key := progress.Key{ID: "between-patches"}
	up, err := a.Attach(ctx, key, progress.Begin{Kind: progress.KindTus, Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	up.Counter().Store(60)
	up.Leave()
	time.Sleep(2 * progressLease)
	s, ok, err := b.Lookup(ctx, key)
	if err != nil || !ok || s.State != progress.StateUploading || s.Received != 60 {
		t.Fatalf("a resumable upload between PATCHes, after two leases: %+v %v %v", s, ok, err)
	}
	ttl, _ := rawClient(t, addr).PTTL(ctx, "p:progress:up::between-patches").Result()
	if ttl < 8*time.Second || ttl > 10*time.Second {
		t.Errorf("its record's TTL %v, want about Idle (10s)", ttl)
	}
	// Its next PATCH, at B, joins it.
	next, err := b.Attach(ctx, key, progress.Begin{Kind: progress.KindTus, Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	next.Counter().Store(100)
	next.Finish(ctx, progress.End{State: progress.StateDone})
	if s2, _, _ := a.Lookup(ctx, key); !s2.StartedAt.Equal(*s.StartedAt) || s2.State != progress.StateDone || s2.Received != 100 {
		t.Errorf("after the next PATCH at B: %+v, want the same upload done", s2)
	}
}

// The writer writes the count at most once per write interval.
func TestProgressWritesThrottled(t *testing.T) {
	addr := enginetest.Redis(t)
	a := newProgress(t, addr, "p:", redisstate.ProgressOptions{})
	ctx := context.Background()
	up, err := a.Start(ctx, progress.Key{ID: "fast"}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Finish(ctx, progress.End{State: progress.StateDone})
	raw := rawClient(t, addr)
	seen := map[string]bool{}
	start := time.Now()
	for time.Since(start) < time.Second {
		up.Counter().Add(1000) // bytes arrive all the time
		at, _ := raw.HGet(ctx, "p:progress:up::fast", "at").Result()
		seen[at] = true
		time.Sleep(5 * time.Millisecond)
	}
	// One value from the start, then one per 250ms write.
	if n := len(seen); n < 3 || n > 6 {
		t.Errorf("%d writes seen in 1s; want about 4 (one per %v)", n, redisstate.DefaultWriteInterval)
	}
}

// Nothing stays in Redis once every upload has finished and its
// retention has passed, whatever way it ended; the owner value never
// appears in a key.
func TestProgressNoKeysLeft(t *testing.T) {
	addr := enginetest.Redis(t)
	const retention = 500 * time.Millisecond
	o := redisstate.ProgressOptions{Retention: retention, MaxFinished: 3}
	a, b := newProgress(t, addr, "p:", o), newProgress(t, addr, "p:", o)
	ctx := context.Background()
	raw := rawClient(t, addr)
	for i := range 6 {
		up, err := a.Start(ctx, progress.Key{Owner: "secret-token", ID: fmt.Sprint("m", i)}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		if err != nil {
			t.Fatal(err)
		}
		up.Finish(ctx, progress.End{State: progress.StateDone, Files: []byte(`[{"name":"x"}]`)})
	}
	tus, _ := a.Attach(ctx, progress.Key{Owner: "secret-token", ID: "t1"}, progress.Begin{Kind: progress.KindTus, Size: 10})
	tus.Finish(ctx, progress.End{State: progress.StateDone})
	cancelled, _ := a.Start(ctx, progress.Key{ID: "c1"}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
	b.Cancel(ctx, progress.Key{ID: "c1"})
	cancelled.Finish(ctx, progress.End{State: progress.StateCancelled})
	parked, _ := a.Attach(ctx, progress.Key{Owner: "secret-token", ID: "t2"}, progress.Begin{Kind: progress.KindTus, Size: 10})
	parked.Leave()
	b.Expire(ctx, "t2")

	keys, _ := raw.Keys(ctx, "*").Result()
	if n, _ := raw.ZCard(ctx, "p:progress:finished").Result(); n != 3 {
		t.Errorf("%d finished records indexed; want the cap, 3 (keys %q)", n, keys)
	}
	for _, k := range keys {
		if strings.Contains(k, "secret-token") {
			t.Errorf("key %q holds the owner value", k)
		}
	}
	time.Sleep(retention + 300*time.Millisecond)
	if keys, _ := raw.Keys(ctx, "*").Result(); len(keys) != 0 {
		t.Errorf("keys left after every upload finished and its retention passed: %q", keys)
	}
}

// The watchers of a key are forgotten when they stop.
func TestProgressWatchBounded(t *testing.T) {
	addr := enginetest.Redis(t)
	a := newProgress(t, addr, "p:", redisstate.ProgressOptions{})
	for i := range 1000 {
		_, stop := a.Watch(progress.Key{ID: fmt.Sprint(i)})
		stop()
	}
	if n := a.Watchers(); n != 0 {
		t.Errorf("%d keys watched after every watcher stopped", n)
	}
}

// waitFor looks the upload up until cond holds, within d.
func waitFor(t *testing.T, r progress.Registry, key progress.Key, cond func(progress.Snapshot) bool, d time.Duration) progress.Snapshot {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s, ok, err := r.Lookup(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if ok && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %+v (held %v)", d, s, ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The cancel message alone stops the request: with writes (and so flag
// reads) ten seconds apart, the cancel still lands at once.
func TestProgressCancelByMessage(t *testing.T) {
	addr := enginetest.Redis(t)
	slow := redisstate.ProgressOptions{Lease: time.Minute, WriteInterval: 10 * time.Second}
	a, c := newProgress(t, addr, "p:", slow), newProgress(t, addr, "p:", slow)
	ctx := context.Background()
	key := progress.Key{ID: "by-message"}
	cancelledAt := make(chan time.Time, 1)
	up, err := a.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: -1,
		Cancel: func(error) { cancelledAt <- time.Now() }})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Finish(ctx, progress.End{State: progress.StateCancelled})
	sent := time.Now()
	if err := c.Cancel(ctx, key); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-cancelledAt:
		t.Logf("cancel by message alone: %v", at.Sub(sent))
	case <-time.After(time.Second):
		t.Fatal("the cancel message did not reach the request within 1s")
	}
}

// An upload expired by another instance's sweeper is no longer in flight
// at the instance receiving it: its Done closes at the next write, and its
// Finish changes nothing.
func TestProgressExpireReachesWriter(t *testing.T) {
	addr := enginetest.Redis(t)
	a, b := newProgress(t, addr, "p:", redisstate.ProgressOptions{}), newProgress(t, addr, "p:", redisstate.ProgressOptions{})
	ctx := context.Background()
	key := progress.Key{Owner: "o", ID: "stale"}
	up, err := a.Attach(ctx, key, progress.Begin{Kind: progress.KindTus, Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	up.Counter().Store(3)
	if err := b.Expire(ctx, "stale"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed within 1s of the expiry at another instance")
	}
	if n := len(a.Local(progress.KindTus)); n != 0 {
		t.Errorf("%d local uploads after the expiry", n)
	}
	up.Finish(ctx, progress.End{State: progress.StateDone})
	if s, _, _ := b.Lookup(ctx, key); s.State != progress.StateError || s.Code != "upload-expired" {
		t.Errorf("after the expiry and a late Finish: %+v", s)
	}
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Retention follows the registry's clock too, as Memory's does (the TTL
// bounds Redis's memory in real time).
func TestProgressRetentionClock(t *testing.T) {
	addr := enginetest.Redis(t)
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := redisstate.ProgressOptions{Retention: 30 * time.Second, Now: clock.Now}
	a, b := newProgress(t, addr, "p:", o), newProgress(t, addr, "p:", o)
	ctx := context.Background()
	key := progress.Key{ID: "clocked"}
	up, err := a.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	up.Counter().Store(100)
	up.Finish(ctx, progress.End{State: progress.StateDone})
	for _, tc := range []struct {
		advance time.Duration
		held    bool
	}{
		{0, true},
		{30*time.Second - time.Millisecond, true},
		{time.Millisecond, false}, // at retention
	} {
		clock.Advance(tc.advance)
		s, ok, err := b.Lookup(ctx, key)
		if err != nil || ok != tc.held {
			t.Fatalf("%v after the end: held %v (%+v, %v), want %v", clock.Now().Sub(time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)), ok, s, err, tc.held)
		}
		if ok && s.Speed != 50 {
			t.Errorf("speed %d, want 50 (100 bytes in 2s)", s.Speed)
		}
		wantCancel := map[bool]error{true: progress.ErrFinished, false: progress.ErrNotFound}[tc.held]
		if err := b.Cancel(ctx, key); !errors.Is(err, wantCancel) {
			t.Errorf("Cancel: %v, want %v", err, wantCancel)
		}
	}
	if ttl, _ := rawClient(t, addr).PTTL(ctx, "p:progress:up::clocked").Result(); ttl <= 0 {
		t.Errorf("the record's TTL %v; the real-time TTL still bounds it", ttl)
	}
}
