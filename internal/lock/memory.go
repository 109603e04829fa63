package lock

import (
	"context"
	"sync"
)

// Memory is the Locker of one process. Its zero value is ready to use. It
// keeps an entry only for the uploads that are locked or waited for.
type Memory struct {
	mu      sync.Mutex
	entries map[string]*memEntry
	tokens  uint64 // the last token handed out, for every upload
}

// memEntry is the state of one upload's lock.
type memEntry struct {
	holder  *memLock      // nil when free
	freed   chan struct{} // closed (and replaced) at each unlock
	waiters int
}

// memLock is one holding of a Memory lock.
type memLock struct {
	m       *Memory
	id      string
	token   uint64
	release func()
}

// Lock implements Locker.
func (m *Memory) Lock(ctx context.Context, id string, release func()) (Lock, error) {
	return m.lock(ctx, id, release, true)
}

// Hold implements Locker.
func (m *Memory) Hold(ctx context.Context, id string) (Lock, error) {
	return m.lock(ctx, id, nil, false)
}

// lock takes the lock of id, asking the holder to let go when ask is set.
func (m *Memory) lock(ctx context.Context, id string, release func(), ask bool) (Lock, error) {
	m.mu.Lock()
	if m.entries == nil {
		m.entries = map[string]*memEntry{}
	}
	e := m.entries[id]
	if e == nil {
		e = &memEntry{freed: make(chan struct{})}
		m.entries[id] = e
	}
	e.waiters++
	for e.holder != nil {
		holderRelease, freed := e.holder.release, e.freed
		m.mu.Unlock()
		if ask && holderRelease != nil {
			holderRelease()
		}
		select {
		case <-freed:
		case <-ctx.Done():
			m.mu.Lock()
			e.waiters--
			m.forgetLocked(id, e)
			m.mu.Unlock()
			return nil, ctx.Err()
		}
		m.mu.Lock()
	}
	e.waiters--
	m.tokens++
	l := &memLock{m: m, id: id, token: m.tokens, release: release}
	e.holder = l
	m.mu.Unlock()
	return l, nil
}

// forgetLocked drops the entry of an upload nobody holds or waits for.
func (m *Memory) forgetLocked(id string, e *memEntry) {
	if e.holder == nil && e.waiters == 0 && m.entries[id] == e {
		delete(m.entries, id)
	}
}

// Len is how many uploads are locked or waited for.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

func (l *memLock) Token() uint64 { return l.token }

// Lost is nil: a process's own lock cannot be lost.
func (l *memLock) Lost() <-chan struct{} { return nil }

func (l *memLock) Unlock(context.Context) error {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[l.id]
	if e == nil || e.holder != l {
		return ErrNotHeld
	}
	e.holder = nil
	close(e.freed)
	e.freed = make(chan struct{})
	m.forgetLocked(l.id, e)
	return nil
}

var _ Locker = (*Memory)(nil)
