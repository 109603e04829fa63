package progress

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Memory is the Registry of one process. Finished entries are dropped once
// past retention, and beyond the cap the oldest go first, each time the
// registry is used: its memory is bounded without a background goroutine.
type Memory struct {
	mu          sync.Mutex
	now         func() time.Time // replaceable clock
	retention   time.Duration
	maxFinished int
	entries     map[Key]*entry
	finished    []*entry // in the order they finished; oldest first
	watches     map[Key]*memWatch
}

// entry is one upload in flight or recently finished. Its fields are
// guarded by Memory.mu, but for counter, which is atomic.
type entry struct {
	key       Key
	kind      string
	size      int64 // -1 when unknown
	started   time.Time
	counter   *atomic.Int64 // the live byte count while in flight
	reqs      map[*memUpload]struct{}
	cancelled chan struct{} // closed by Cancel
	done      chan struct{} // closed at the end

	state    string
	finished time.Time
	final    int64 // bytes received, once finished
	status   int
	code     string
	files    []byte
}

// memWatch is the change signal of one key, shared by its watchers.
type memWatch struct {
	ch   chan struct{} // closed and replaced at each change
	refs int
}

// NewMemory returns an empty registry with the default limits and the
// system clock.
func NewMemory() *Memory {
	return &Memory{
		now:         time.Now,
		retention:   DefaultRetention,
		maxFinished: DefaultMaxFinished,
		entries:     map[Key]*entry{},
		watches:     map[Key]*memWatch{},
	}
}

// SetClock replaces the clock (tests).
func (m *Memory) SetClock(now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// Now reads the clock.
func (m *Memory) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now()
}

// Configure implements Registry.
func (m *Memory) Configure(retention time.Duration, maxFinished int) {
	if retention <= 0 {
		retention = DefaultRetention
	}
	if maxFinished <= 0 {
		maxFinished = DefaultMaxFinished
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retention, m.maxFinished = retention, maxFinished
	m.pruneLocked()
}

// Len reports how many uploads are held, in flight and finished.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	return len(m.entries)
}

// Start implements Registry.
func (m *Memory) Start(_ context.Context, key Key, b Begin) (Upload, error) {
	return m.begin(key, b, false)
}

// Attach implements Registry.
func (m *Memory) Attach(_ context.Context, key Key, b Begin) (Upload, error) {
	return m.begin(key, b, true)
}

func (m *Memory) begin(key Key, b Begin, join bool) (Upload, error) {
	m.mu.Lock()
	m.pruneLocked()
	if old, ok := m.entries[key]; ok && old.state == StateUploading {
		switch {
		case !join:
			m.mu.Unlock()
			return nil, ErrIDInUse
		case old.kind != b.Kind:
			m.mu.Unlock()
			return detached(key, b), nil
		}
		u := &memUpload{m: m, e: old, counter: old.counter, cancel: b.Cancel}
		old.reqs[u] = struct{}{}
		cancelled := isClosed(old.cancelled)
		m.mu.Unlock()
		if cancelled && b.Cancel != nil {
			b.Cancel(ErrCancelled) // a cancel that came before this request
		}
		return u, nil
	}
	counter := b.Counter
	if counter == nil {
		counter = new(atomic.Int64)
	}
	e := &entry{
		key:       key,
		kind:      b.Kind,
		size:      b.Size,
		started:   m.now(),
		counter:   counter,
		reqs:      map[*memUpload]struct{}{},
		cancelled: make(chan struct{}),
		done:      make(chan struct{}),
		state:     StateUploading,
	}
	u := &memUpload{m: m, e: e, counter: counter, cancel: b.Cancel}
	e.reqs[u] = struct{}{}
	m.entries[key] = e
	m.notifyLocked(key)
	m.mu.Unlock()
	return u, nil
}

// Lookup implements Registry.
func (m *Memory) Lookup(_ context.Context, key Key) (Snapshot, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	e := m.entries[key]
	if e == nil {
		return Snapshot{}, false, nil
	}
	started := e.started
	s := Snapshot{ID: key.ID, Kind: e.kind, State: e.state, StartedAt: &started, Status: e.status, Code: e.code, Files: FilesOf(e.files)}
	end := m.now()
	if e.state == StateUploading {
		s.Received = e.counter.Load()
	} else {
		s.Received, end = e.final, e.finished
	}
	if e.size >= 0 {
		size := e.size
		s.Size = &size
	}
	s.Speed = Speed(s.Received, e.started, end)
	return s, true, nil
}

// Watch implements Registry.
func (m *Memory) Watch(key Key) (<-chan struct{}, func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.watches[key]
	if w == nil {
		w = &memWatch{ch: make(chan struct{})}
		m.watches[key] = w
	}
	w.refs++
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if w.refs--; w.refs == 0 && m.watches[key] == w {
				delete(m.watches, key)
			}
		})
	}
}

// Cancel implements Registry.
func (m *Memory) Cancel(_ context.Context, key Key) error {
	m.mu.Lock()
	m.pruneLocked()
	e := m.entries[key]
	switch {
	case e == nil:
		m.mu.Unlock()
		return ErrNotFound
	case e.state != StateUploading:
		m.mu.Unlock()
		return ErrFinished
	}
	if !isClosed(e.cancelled) {
		close(e.cancelled)
	}
	var cancels []context.CancelCauseFunc
	for u := range e.reqs {
		if u.cancel != nil {
			cancels = append(cancels, u.cancel)
		}
	}
	m.notifyLocked(key)
	m.mu.Unlock()
	for _, cancel := range cancels {
		cancel(ErrCancelled)
	}
	return nil
}

// Expire implements Registry.
func (m *Memory) Expire(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, e := range m.entries {
		if k.ID == id && e.kind == KindTus && e.state == StateUploading {
			m.endLocked(e, End{State: StateError, Status: http.StatusGone, Code: "upload-expired"})
		}
	}
	m.pruneLocked()
	return nil
}

// Local implements Registry.
func (m *Memory) Local(kind string) []Upload {
	m.mu.Lock()
	defer m.mu.Unlock()
	var list []Upload
	for _, e := range m.entries {
		if e.kind == kind && e.state == StateUploading {
			for u := range e.reqs {
				list = append(list, u)
			}
		}
	}
	return list
}

// Close implements Registry: a Memory has no background work.
func (m *Memory) Close() error { return nil }

// endLocked records the end of an upload in flight.
func (m *Memory) endLocked(e *entry, end End) {
	e.state, e.finished, e.final = end.State, m.now(), e.counter.Load()
	e.status, e.code, e.files = end.Status, end.Code, FilesOf(end.Files)
	clear(e.reqs)
	close(e.done)
	if m.entries[e.key] == e {
		m.finished = append(m.finished, e)
	}
	m.notifyLocked(e.key)
}

// pruneLocked drops the finished entries past retention, and the oldest
// ones beyond the cap.
func (m *Memory) pruneLocked() {
	cutoff := m.now().Add(-m.retention)
	for len(m.finished) > 0 {
		e := m.finished[0]
		if len(m.finished) <= m.maxFinished && e.finished.After(cutoff) {
			break
		}
		m.finished[0] = nil
		m.finished = m.finished[1:]
		if m.entries[e.key] == e {
			delete(m.entries, e.key)
		}
	}
	if cap(m.finished) > 64 && len(m.finished) < cap(m.finished)/4 {
		m.finished = append([]*entry(nil), m.finished...)
	}
}

// notifyLocked wakes the watchers of key.
func (m *Memory) notifyLocked(key Key) {
	if w := m.watches[key]; w != nil {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// memUpload is one request's part in a Memory upload.
type memUpload struct {
	m       *Memory
	e       *entry // nil: detached, records nothing
	counter *atomic.Int64
	cancel  context.CancelCauseFunc

	// of a detached upload
	key              Key
	kind             string
	never, doneAlone chan struct{}
	doneOnce         sync.Once
}

// detached is the Upload of a request whose key is held by an upload of
// another kind: it records nothing.
func detached(key Key, b Begin) *memUpload {
	counter := b.Counter
	if counter == nil {
		counter = new(atomic.Int64)
	}
	return &memUpload{key: key, kind: b.Kind, counter: counter, cancel: b.Cancel,
		never: make(chan struct{}), doneAlone: make(chan struct{})}
}

func (u *memUpload) Key() Key {
	if u.e == nil {
		return u.key
	}
	return u.e.key
}

func (u *memUpload) Kind() string {
	if u.e == nil {
		return u.kind
	}
	return u.e.kind
}

func (u *memUpload) Counter() *atomic.Int64 { return u.counter }

func (u *memUpload) Cancelled() <-chan struct{} {
	if u.e == nil {
		return u.never
	}
	return u.e.cancelled
}

func (u *memUpload) Done() <-chan struct{} {
	if u.e == nil {
		return u.doneAlone
	}
	return u.e.done
}

func (u *memUpload) Stop(cause error) {
	if u.cancel != nil {
		u.cancel(cause)
	}
}

func (u *memUpload) Leave() {
	if u.e == nil {
		return
	}
	u.m.mu.Lock()
	defer u.m.mu.Unlock()
	delete(u.e.reqs, u)
}

func (u *memUpload) Finish(_ context.Context, end End) error {
	if u.e == nil {
		u.doneOnce.Do(func() { close(u.doneAlone) })
		return nil
	}
	m := u.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := u.e.reqs[u]; !ok || u.e.state != StateUploading {
		return nil // left, finished or expired already
	}
	m.endLocked(u.e, end)
	m.pruneLocked()
	return nil
}

var _ Registry = (*Memory)(nil)
