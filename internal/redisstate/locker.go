// Package redisstate keeps the state that several Caddy instances share in
// Redis: the one-writer lock of resumable uploads (a lock.Locker) and the
// progress registry (a progress.Registry: progress, retention, cancel).
//
// Redis 7, one node (or a primary with replicas); the scripts touch keys of
// more than one upload, so Redis Cluster is not supported.
package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reflexupload/caddy-reflex-upload/internal/lock"
)

// DefaultLease is how long a lock outlives a holder that stopped renewing
// it (an instance that died): another instance can take it after that.
const DefaultLease = 10 * time.Second

// The keys under the prefix:
//
//	lock:fence         the last fencing token handed out (for every upload)
//	lock:{id}          the holder ("instance:token"), with the lease as its TTL
//	lock:release:{id}  a release request, kept for one lease: a holder that
//	                   missed the message sees it when it renews
//
// and the channels:
//
//	lock:release       an upload id whose holder is asked to let go
//	lock:freed         an upload id whose lock was given up
var (
	// acquire takes a free lock: KEYS lock, fence, release flag; ARGV
	// instance, lease in ms. It returns the token, or 0 when held.
	acquire = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. t, 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
return t`)
	// renew extends a held lock's lease: KEYS lock, release flag; ARGV
	// holder value, lease in ms. It returns -1 when the lock is not held
	// by that value any more, else 1 when a release was asked, else 0.
	renew = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('EXISTS', KEYS[2])`)
	// unlock gives up a held lock and says so: KEYS lock; ARGV holder
	// value, freed channel, upload id. It returns 0 when not held.
	unlock = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`)
)

// Locker is a lock.Locker whose locks are shared by every Locker on the
// same Redis under the same key prefix. A holder renews its lease every
// third of it; a waiter asks the holder to let go (by message, and by a
// flag the holder reads when it renews) and retries when the lock is freed
// or, at the latest, every poll interval.
type Locker struct {
	client   redis.UniversalClient
	prefix   string
	lease    time.Duration
	poll     time.Duration
	instance string // this Locker's random name, part of the holder value

	sub    *redis.PubSub
	cancel context.CancelFunc
	done   chan struct{} // closed when the subscription loop has ended

	mu      sync.Mutex
	held    map[string]*redisLock      // the locks this Locker holds, by upload id
	waiting map[string][]chan struct{} // woken when the upload's lock is freed
	deaf    bool                       // tests: ignore release messages
	stopped map[*redisLock]struct{}    // tests: holders that stopped renewing
}

// NewLocker subscribes to the lock channels under prefix and returns the
// Locker. lease is the time a dead holder keeps a lock (DefaultLease when
// zero). Close it to end the subscription.
func NewLocker(ctx context.Context, client redis.UniversalClient, prefix string, lease time.Duration) (*Locker, error) {
	if lease <= 0 {
		lease = DefaultLease
	}
	var name [8]byte
	rand.Read(name[:])
	l := &Locker{
		client:   client,
		prefix:   prefix,
		lease:    lease,
		poll:     min(lease/4, 250*time.Millisecond),
		instance: hex.EncodeToString(name[:]),
		held:     map[string]*redisLock{},
		waiting:  map[string][]chan struct{}{},
		done:     make(chan struct{}),
	}
	l.sub = client.Subscribe(ctx, l.key("lock:release"), l.key("lock:freed"))
	if _, err := l.sub.Receive(ctx); err != nil { // the subscription is in place
		l.sub.Close()
		return nil, fmt.Errorf("subscribing to lock messages: %w", err)
	}
	subCtx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.listen(subCtx)
	return l, nil
}

// Close ends the subscription. Locks still held stay held until their
// holders Unlock them or their lease runs out.
func (l *Locker) Close() error {
	l.cancel()
	err := l.sub.Close()
	<-l.done
	return err
}

func (l *Locker) key(s string) string { return l.prefix + s }

// listen dispatches the lock messages: a release request to the local
// holder of that upload, a freed lock to the local waiters.
func (l *Locker) listen(ctx context.Context) {
	defer close(l.done)
	ch := l.sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			switch msg.Channel {
			case l.key("lock:release"):
				l.mu.Lock()
				h, deaf := l.held[msg.Payload], l.deaf
				l.mu.Unlock()
				if h != nil && !deaf {
					h.askRelease()
				}
			case l.key("lock:freed"):
				l.wake(msg.Payload)
			}
		}
	}
}

// wake wakes the local waiters of upload id.
func (l *Locker) wake(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.waiting[id] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func (l *Locker) addWaiter(id string, c chan struct{}) {
	l.mu.Lock()
	l.waiting[id] = append(l.waiting[id], c)
	l.mu.Unlock()
}

func (l *Locker) removeWaiter(id string, c chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.waiting[id]
	for i, w := range list {
		if w == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(l.waiting, id)
	} else {
		l.waiting[id] = list
	}
}

// Lock implements lock.Locker.
func (l *Locker) Lock(ctx context.Context, id string, release func()) (lock.Lock, error) {
	return l.lock(ctx, id, release, true)
}

// Hold implements lock.Locker.
func (l *Locker) Hold(ctx context.Context, id string) (lock.Lock, error) {
	return l.lock(ctx, id, nil, false)
}

// lock takes the lock of id, asking the holder to let go when ask is set.
func (l *Locker) lock(ctx context.Context, id string, release func(), ask bool) (lock.Lock, error) {
	freed := make(chan struct{}, 1)
	l.addWaiter(id, freed) // before the first try, so no freed message is missed
	defer l.removeWaiter(id, freed)
	lockKey, flagKey := l.key("lock:"+id), l.key("lock:release:"+id)
	leaseMS := l.lease.Milliseconds()
	var lastAsk time.Time
	for {
		token, err := acquire.Run(ctx, l.client, []string{lockKey, l.key("lock:fence"), flagKey}, l.instance, leaseMS).Int64()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("taking the lock of %s: %w", id, err)
		}
		if token > 0 {
			return l.hold(id, uint64(token), release), nil
		}
		if ask && time.Since(lastAsk) >= l.lease/2 {
			lastAsk = time.Now()
			pipe := l.client.Pipeline()
			pipe.Set(ctx, flagKey, "1", l.lease)
			pipe.Publish(ctx, l.key("lock:release"), id)
			if _, err := pipe.Exec(ctx); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, fmt.Errorf("asking the holder of %s to let go: %w", id, err)
			}
		}
		timer := time.NewTimer(l.poll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-freed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// hold records a lock taken and starts renewing its lease.
func (l *Locker) hold(id string, token uint64, release func()) *redisLock {
	h := &redisLock{
		l:       l,
		id:      id,
		token:   token,
		value:   fmt.Sprintf("%s:%d", l.instance, token),
		release: release,
		lost:    make(chan struct{}),
		stop:    make(chan struct{}),
		renewed: make(chan struct{}),
	}
	l.mu.Lock()
	l.held[id] = h
	l.mu.Unlock()
	go h.renewLoop()
	return h
}

// redisLock is one holding of a Redis lock.
type redisLock struct {
	l       *Locker
	id      string
	token   uint64
	value   string // the holder value in Redis
	release func()

	lost     chan struct{} // closed when the lease was lost
	lostOnce sync.Once
	stop     chan struct{} // closed by Unlock: renewals end
	stopOnce sync.Once
	renewed  chan struct{} // closed when renewLoop has returned
}

func (h *redisLock) Token() uint64         { return h.token }
func (h *redisLock) Lost() <-chan struct{} { return h.lost }

func (h *redisLock) askRelease() {
	if h.release != nil {
		h.release()
	}
}

// renewLoop extends the lease every third of it, passes on a release
// request that came as a flag, and declares the lock lost when Redis says
// another holds it or when no renewal got through for a whole lease.
func (h *redisLock) renewLoop() {
	defer close(h.renewed)
	l := h.l
	tick := time.NewTicker(l.lease / 3)
	defer tick.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		l.mu.Lock()
		_, stopped := l.stopped[h]
		l.mu.Unlock()
		if stopped {
			continue // tests: a holder that stopped renewing, as a dead process
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.lease/3)
		res, err := renew.Run(ctx, l.client, []string{l.key("lock:" + h.id), l.key("lock:release:" + h.id)},
			h.value, l.lease.Milliseconds()).Int64()
		cancel()
		switch {
		case err != nil:
			if time.Since(lastOK) >= l.lease {
				h.loseLock()
				return
			}
		case res < 0:
			h.loseLock()
			return
		default:
			lastOK = time.Now()
			if res == 1 {
				h.askRelease()
			}
		}
	}
}

// loseLock marks the lock lost and forgets it.
func (h *redisLock) loseLock() {
	h.lostOnce.Do(func() { close(h.lost) })
	h.forget()
}

func (h *redisLock) forget() {
	l := h.l
	l.mu.Lock()
	if l.held[h.id] == h {
		delete(l.held, h.id)
	}
	l.mu.Unlock()
}

// Unlock implements lock.Lock.
func (h *redisLock) Unlock(ctx context.Context) error {
	first := false
	h.stopOnce.Do(func() { first = true; close(h.stop) })
	<-h.renewed
	h.forget()
	if !first {
		return lock.ErrNotHeld
	}
	select {
	case <-h.lost:
		return lock.ErrNotHeld
	default:
	}
	l := h.l
	n, err := unlock.Run(ctx, l.client, []string{l.key("lock:" + h.id)}, h.value, l.key("lock:freed"), h.id).Int64()
	if err != nil {
		return fmt.Errorf("giving up the lock of %s: %w", h.id, err)
	}
	if n == 0 {
		return lock.ErrNotHeld
	}
	return nil
}

var _ lock.Locker = (*Locker)(nil)
