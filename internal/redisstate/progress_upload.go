package redisstate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// listen dispatches the messages: a cancel to the requests here that
// receive the upload, a change to the watchers here.
func (p *Progress) listen(ctx context.Context) {
	ch := p.sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			switch msg.Channel {
			case p.key("progress:cancel"):
				r, gen, _ := strings.Cut(msg.Payload, " ")
				p.mu.Lock()
				l, deaf := p.local[r], p.deaf
				p.mu.Unlock()
				if l != nil && l.gen == gen && !deaf {
					l.cancelLocal()
				}
			case p.key("progress:changed"):
				p.notify(msg.Payload)
			}
		}
	}
}

// notify wakes the watchers of upload rid.
func (p *Progress) notify(r string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.watches[r]; w != nil {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// writeLoop writes, every interval, the count of each upload a request
// here receives, renewing its lease and reading its cancel flag, in one
// round trip for all of them.
func (p *Progress) writeLoop(ctx context.Context) {
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		list := make([]*localUpload, 0, len(p.local))
		for _, l := range p.local {
			list = append(list, l)
		}
		p.mu.Unlock()
		if len(list) == 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, p.lease/3)
		pipe := p.client.Pipeline()
		cmds := make([]*redis.Cmd, len(list))
		now := p.now().UnixNano()
		for i, l := range list {
			cmds[i] = writeScript.EvalSha(wctx, pipe, []string{p.recordKey(l.rid), p.tusKey(l.key.ID)},
				l.gen, l.counter.Load(), now, p.lease.Milliseconds(), 0)
		}
		_, err := pipe.Exec(wctx)
		cancel()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			writeScript.Load(ctx, p.client) // Redis restarted: next time
		}
		for i, l := range list {
			n, err := cmds[i].Int64()
			switch {
			case err != nil:
			case n < 0:
				p.mu.Lock()
				p.endLocked(l) // ended elsewhere (expired), or lost
				p.mu.Unlock()
			case n == 1:
				l.cancelLocal() // the flag, for a missed message
			}
		}
	}
}

// endLocked forgets a local upload that has ended.
func (p *Progress) endLocked(l *localUpload) {
	if p.local[l.rid] == l {
		delete(p.local, l.rid)
	}
	clear(l.reqs)
	l.doneOnce.Do(func() { close(l.done) })
}

// localUpload is an upload that requests of this instance receive.
type localUpload struct {
	p       *Progress
	key     progress.Key
	rid     string
	kind    string
	gen     string
	counter *atomic.Int64

	reqs       map[*redisUpload]struct{} // guarded by p.mu
	cancelled  chan struct{}
	cancelOnce sync.Once
	done       chan struct{}
	doneOnce   sync.Once
}

// cancelLocal closes Cancelled and stops the requests here.
func (l *localUpload) cancelLocal() {
	l.cancelOnce.Do(func() { close(l.cancelled) })
	l.p.mu.Lock()
	var cancels []context.CancelCauseFunc
	for u := range l.reqs {
		if u.cancel != nil {
			cancels = append(cancels, u.cancel)
		}
	}
	l.p.mu.Unlock()
	for _, c := range cancels {
		c(progress.ErrCancelled)
	}
}

// redisUpload is one request's part in a Progress upload.
type redisUpload struct {
	l      *localUpload // nil: detached, records nothing
	cancel context.CancelCauseFunc
	left   bool // guarded by l.p.mu

	// of a detached upload
	key       progress.Key
	kind      string
	counter   *atomic.Int64
	doneAlone chan struct{}
	doneOnce  sync.Once
}

var never = make(chan struct{})

func (u *redisUpload) Key() progress.Key {
	if u.l == nil {
		return u.key
	}
	return u.l.key
}

func (u *redisUpload) Kind() string {
	if u.l == nil {
		return u.kind
	}
	return u.l.kind
}

func (u *redisUpload) Counter() *atomic.Int64 {
	if u.l == nil {
		return u.counter
	}
	return u.l.counter
}

func (u *redisUpload) Cancelled() <-chan struct{} {
	if u.l == nil {
		return never
	}
	return u.l.cancelled
}

func (u *redisUpload) Done() <-chan struct{} {
	if u.l == nil {
		return u.doneAlone
	}
	return u.l.done
}

func (u *redisUpload) Stop(cause error) {
	if u.cancel != nil {
		u.cancel(cause)
	}
}

// Leave implements progress.Upload. When the last request here leaves, the
// count is written and the record kept for Idle (a resumable upload waits
// for its next PATCH, maybe at another instance).
func (u *redisUpload) Leave() {
	l := u.l
	if l == nil {
		return
	}
	p := l.p
	p.mu.Lock()
	if u.left {
		p.mu.Unlock()
		return
	}
	u.left = true
	delete(l.reqs, u)
	last := len(l.reqs) == 0 && p.local[l.rid] == l
	if last {
		delete(p.local, l.rid)
	}
	p.mu.Unlock()
	if !last {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.lease/3)
	defer cancel()
	writeScript.Run(ctx, p.client, []string{p.recordKey(l.rid), p.tusKey(l.key.ID)},
		l.gen, l.counter.Load(), p.now().UnixNano(), p.idle.Milliseconds(), p.idle.Milliseconds())
}

// Finish implements progress.Upload.
func (u *redisUpload) Finish(ctx context.Context, end progress.End) error {
	l := u.l
	if l == nil {
		u.doneOnce.Do(func() { close(u.doneAlone) })
		return nil
	}
	p := l.p
	p.mu.Lock()
	if u.left || isClosed(l.done) {
		p.mu.Unlock()
		return nil
	}
	u.left = true
	retention, maxFinished := p.retention, p.maxFinished
	p.mu.Unlock()
	files := progress.FilesOf(end.Files)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.lease/3)
	defer cancel()
	err := finishScript.Run(ctx, p.client,
		[]string{p.recordKey(l.rid), p.key("progress:finished"), p.tusKey(l.key.ID)},
		l.gen, end.State, end.Status, end.Code, string(files), l.counter.Load(), p.now().UnixNano(),
		retention.Milliseconds(), maxFinished, p.key("progress:changed"), l.rid).Err()
	p.mu.Lock()
	p.endLocked(l)
	p.mu.Unlock()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("recording the end of upload %s: %w", l.key.ID, err)
	}
	return nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

var _ progress.Registry = (*Progress)(nil)
