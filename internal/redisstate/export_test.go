package redisstate

import "github.com/reflexupload/caddy-reflex-upload/internal/lock"

// Deafen makes the Locker ignore release messages, as an instance whose
// subscription missed them: its holders learn of a release request only
// from the flag, when they renew.
func (l *Locker) Deafen() {
	l.mu.Lock()
	l.deaf = true
	l.mu.Unlock()
}

// StopRenewing makes a held lock stop renewing its lease, as the lock of
// an instance that died.
func (l *Locker) StopRenewing(held lock.Lock) {
	l.mu.Lock()
	if l.stopped == nil {
		l.stopped = map[*redisLock]struct{}{}
	}
	l.stopped[held.(*redisLock)] = struct{}{}
	l.mu.Unlock()
}

// Deafen makes the Progress ignore cancel messages, as an instance whose
// subscription missed them: its uploads learn of a cancel only from the
// flag, at their next write.
func (p *Progress) Deafen() {
	p.mu.Lock()
	p.deaf = true
	p.mu.Unlock()
}

// Watchers is how many keys have watchers here.
func (p *Progress) Watchers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.watches)
}
