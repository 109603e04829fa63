package progress_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

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

func newMemory(t *testing.T, retention time.Duration, maxFinished int) (*progress.Memory, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := progress.NewMemory()
	m.SetClock(clock.Now)
	m.Configure(retention, maxFinished)
	return m, clock
}

// finishAt starts and finishes upload id, after the clock moved by took.
func finishAt(t *testing.T, m *progress.Memory, clock *fakeClock, id string, took time.Duration) {
	t.Helper()
	up, err := m.Start(context.Background(), progress.Key{ID: id}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(took)
	up.Finish(context.Background(), progress.End{State: progress.StateDone})
}

func TestMemoryRetention(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after time.Duration // from the end
		held  bool
	}{
		{"just finished", 0, true},
		{"within retention", 29 * time.Second, true},
		{"a nanosecond before retention", 30*time.Second - time.Nanosecond, true},
		{"at retention", 30 * time.Second, false},
		{"past retention", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, clock := newMemory(t, 30*time.Second, 0)
			finishAt(t, m, clock, "u", time.Second)
			clock.Advance(tc.after)
			_, ok, _ := m.Lookup(context.Background(), progress.Key{ID: "u"})
			if ok != tc.held {
				t.Errorf("held %v, want %v", ok, tc.held)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.held]; m.Len() != want {
				t.Errorf("Len %d, want %d", m.Len(), want)
			}
		})
	}
}

func TestMemoryCap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cap      int
		finished int
		oldest   int // the oldest upload still held
	}{
		{"under the cap", 5, 3, 0},
		{"at the cap", 5, 5, 0},
		{"over the cap", 5, 20, 15},
		{"cap of one", 1, 4, 3},
		{"default cap", 0, progress.DefaultMaxFinished + 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, clock := newMemory(t, time.Hour, tc.cap)
			for i := range tc.finished {
				finishAt(t, m, clock, fmt.Sprint(i), time.Millisecond)
			}
			for _, i := range []int{tc.oldest - 1, tc.oldest, tc.finished - 1} {
				if i < 0 {
					continue
				}
				_, ok, _ := m.Lookup(context.Background(), progress.Key{ID: fmt.Sprint(i)})
				if want := i >= tc.oldest; ok != want {
					t.Errorf("upload %d held %v, want %v", i, ok, want)
				}
			}
			if want := tc.finished - tc.oldest; m.Len() != want {
				t.Errorf("Len %d, want %d", m.Len(), want)
			}
		})
	}
}

// In-flight uploads do not count against the cap, nor expire.
func TestMemoryInFlightStay(t *testing.T) {
	m, clock := newMemory(t, time.Second, 2)
	up, err := m.Start(context.Background(), progress.Key{ID: "long"}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		finishAt(t, m, clock, fmt.Sprint(i), time.Millisecond)
	}
	clock.Advance(24 * time.Hour)
	if s, ok, _ := m.Lookup(context.Background(), progress.Key{ID: "long"}); !ok || s.State != progress.StateUploading {
		t.Errorf("an upload in flight for a day: %+v, %v", s, ok)
	}
	if m.Len() != 1 {
		t.Errorf("Len %d, want 1", m.Len())
	}
	up.Finish(context.Background(), progress.End{State: progress.StateDone})
}

func TestMemorySnapshot(t *testing.T) {
	m, clock := newMemory(t, time.Minute, 0)
	key := progress.Key{Owner: "o", ID: "s"}
	up, err := m.Start(context.Background(), key, progress.Begin{Kind: progress.KindMultipart, Size: 1000})
	if err != nil {
		t.Fatal(err)
	}
	started := clock.Now()
	for _, tc := range []struct {
		name     string
		advance  time.Duration
		add      int64
		finish   bool
		state    string
		received int64
		speed    int64
	}{
		{"at the start", 0, 0, false, progress.StateUploading, 0, 0},
		{"live count", 2 * time.Second, 100, false, progress.StateUploading, 100, 50},
		{"speed over the whole upload", 2 * time.Second, 300, false, progress.StateUploading, 400, 100},
		{"finished", 0, 0, true, progress.StateDone, 400, 100},
		{"frozen after the end", 4 * time.Second, 500, false, progress.StateDone, 400, 100},
	} {
		clock.Advance(tc.advance)
		up.Counter().Add(tc.add)
		if tc.finish {
			up.Finish(context.Background(), progress.End{State: progress.StateDone})
		}
		s, ok, _ := m.Lookup(context.Background(), key)
		if !ok || s.State != tc.state || s.Received != tc.received || s.Speed != tc.speed ||
			!s.StartedAt.Equal(started) || *s.Size != 1000 || s.ID != "s" || s.Kind != progress.KindMultipart {
			t.Errorf("%s: %+v, want %s received %d speed %d", tc.name, s, tc.state, tc.received, tc.speed)
		}
	}
}

// The watchers of a key are forgotten when they stop.
func TestMemoryWatchBounded(t *testing.T) {
	m, _ := newMemory(t, time.Minute, 0)
	for i := range 1000 {
		_, stop := m.Watch(progress.Key{ID: fmt.Sprint(i)})
		stop()
		stop()
	}
	ch, stop := m.Watch(progress.Key{ID: "w"})
	defer stop()
	up, _ := m.Start(context.Background(), progress.Key{ID: "other"}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
	select {
	case <-ch:
		t.Error("a change of another key woke the watcher")
	default:
	}
	up.Finish(context.Background(), progress.End{State: progress.StateDone})
}
