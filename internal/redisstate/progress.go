package redisstate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// Defaults of ProgressOptions.
const (
	// DefaultProgressLease is how long the record of an upload in flight
	// outlives an instance that stopped writing it (one that died).
	DefaultProgressLease = 10 * time.Second
	// DefaultIdle is how long the record of a resumable upload between
	// requests stays (as long as the module's default chunk_expiry).
	DefaultIdle = 24 * time.Hour
	// DefaultWriteInterval is how often the count of an upload in flight
	// is written, its lease renewed and its cancel flag read.
	DefaultWriteInterval = 250 * time.Millisecond
)

// The progress keys under the prefix:
//
//	progress:up:{owner}:{id}  an upload's record (a hash), {owner} the
//	                          sha256 of the owner value in hex ("" for
//	                          none); its TTL: the lease while a request
//	                          receives it, Idle for a resumable upload
//	                          between requests, the retention once finished
//	progress:finished         the finished records by end time (a sorted
//	                          set, for the cap); its TTL is the retention
//	progress:tus:{id}         the records of the resumable uploads in flight
//	                          under id, of every owner (a set, for Expire);
//	                          emptied as they finish, its TTL is Idle
//
// and the channels:
//
//	progress:cancel           "{owner}:{id} {gen}": stop that upload
//	progress:changed          "{owner}:{id}": the upload started, ended or
//	                          was cancelled
//
// A record's fields: gen (random, names one upload under the key), kind,
// size, started and at (Unix ns, the writer's clock: when it started and
// when it was last written), received, state, status, code, files, and
// cancelled (the durable cancel flag).

// retire is the Lua that keeps a finished record for the retention and
// drops the oldest finished beyond the cap: retire(record, finished set,
// retention in ms, cap).
const retire = `
local function retire(rec, fin, retention, cap)
  retention = tonumber(retention)
  redis.call('PEXPIRE', rec, retention)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('ZADD', fin, string.format('%.0f', now), rec)
  redis.call('ZREMRANGEBYSCORE', fin, '-inf', '(' .. string.format('%.0f', now - retention * 1000))
  local over = redis.call('ZCARD', fin) - tonumber(cap)
  if over > 0 then
    local old = redis.call('ZPOPMIN', fin, over)
    for i = 1, #old, 2 do
      if redis.call('HGET', old[i], 'state') ~= 'uploading' then redis.call('DEL', old[i]) end
    end
  end
  redis.call('PEXPIRE', fin, retention)
end
`

var (
	// beginScript starts or joins an upload: KEYS record, tus index; ARGV
	// mode (start|attach), gen, kind, size, started, received, at, lease
	// ms, index TTL ms, changed channel, rid. It returns {0} for busy, {1,
	// gen, started, cancelled} for joined, {2} for another kind in flight,
	// {3} for started.
	beginScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'uploading' then
  if ARGV[1] ~= 'attach' then return {0} end
  local f = redis.call('HMGET', KEYS[1], 'kind', 'gen', 'started', 'cancelled')
  if f[1] ~= ARGV[3] then return {2} end
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  local c = 0
  if f[4] then c = 1 end
  return {1, f[2], f[3], c}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'kind', ARGV[3], 'size', ARGV[4], 'started', ARGV[5],
  'received', ARGV[6], 'at', ARGV[7], 'state', 'uploading')
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if ARGV[3] == 'tus' then
  redis.call('SADD', KEYS[2], KEYS[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
redis.call('PUBLISH', ARGV[10], ARGV[11])
return {3}`)

	// writeScript writes the count of an upload in flight and renews its
	// TTL: KEYS record, tus index; ARGV gen, received, at, TTL ms, index
	// TTL ms (0: leave it). It returns -1 when the upload is no longer in
	// flight under gen, 1 when it was cancelled, else 0.
	writeScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'gen', 'state', 'cancelled')
if f[1] ~= ARGV[1] or f[2] ~= 'uploading' then return -1 end
redis.call('HSET', KEYS[1], 'received', ARGV[2], 'at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
if f[3] then return 1 end
return 0`)

	// finishScript records an upload's end: KEYS record, finished set, tus
	// index; ARGV gen, state, status, code, files, received, at, retention
	// ms, cap, changed channel, rid. It returns 0 when the upload was not
	// in flight under gen.
	finishScript = redis.NewScript(retire + `
local f = redis.call('HMGET', KEYS[1], 'gen', 'state')
if f[1] ~= ARGV[1] or f[2] ~= 'uploading' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'status', ARGV[3], 'code', ARGV[4], 'files', ARGV[5],
  'received', ARGV[6], 'at', ARGV[7])
redis.call('HDEL', KEYS[1], 'cancelled')
redis.call('SREM', KEYS[3], KEYS[1])
retire(KEYS[1], KEYS[2], ARGV[8], ARGV[9])
redis.call('PUBLISH', ARGV[10], ARGV[11])
return 1`)

	// expireScript ends, as expired, the uploads in flight of a tus index:
	// KEYS index, finished set; ARGV at, retention ms, cap, changed
	// channel, status, code, length of the record key before the rid. It
	// returns how many it ended.
	expireScript = redis.NewScript(retire + `
local n = 0
for _, rec in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HGET', rec, 'state') == 'uploading' then
    redis.call('HSET', rec, 'state', 'error', 'status', ARGV[5], 'code', ARGV[6], 'at', ARGV[1])
    redis.call('HDEL', rec, 'cancelled')
    retire(rec, KEYS[2], ARGV[2], ARGV[3])
    redis.call('PUBLISH', ARGV[4], string.sub(rec, tonumber(ARGV[7]) + 1))
    n = n + 1
  end
end
redis.call('DEL', KEYS[1])
return n`)

	// cancelScript sets the cancel flag of an upload in flight and says so:
	// KEYS record; ARGV cancel channel, changed channel, rid, the end time
	// (Unix ns) at or before which a finished upload counts as forgotten.
	// It returns 0 for no upload, 2 for a finished one, else 1.
	cancelScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'state', 'gen', 'at')
if not f[1] then return 0 end
if f[1] ~= 'uploading' then
  if tonumber(f[3]) <= tonumber(ARGV[4]) then return 0 end
  return 2
end
redis.call('HSET', KEYS[1], 'cancelled', '1')
redis.call('PUBLISH', ARGV[1], ARGV[3] .. ' ' .. f[2])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`)
)

// ProgressOptions tunes a Progress; zero values are the defaults.
type ProgressOptions struct {
	// Lease: the TTL of the record of an upload a request receives,
	// renewed at every write. An instance that dies leaves its uploads'
	// records for at most this long.
	Lease time.Duration
	// Idle: the TTL of the record of a resumable upload that no request
	// receives (between PATCHes); set it to the module's chunk_expiry.
	Idle time.Duration
	// WriteInterval: how often each upload in flight here is written.
	WriteInterval time.Duration
	// Retention and MaxFinished: as Registry.Configure.
	Retention   time.Duration
	MaxFinished int
	// Now is the clock of started_at and speed (time.Now when nil).
	Now func() time.Time
}

// Progress is a progress.Registry whose uploads are shared by every
// Progress on the same Redis under the same key prefix: several Caddy
// instances behind a load balancer. The instance whose request receives an
// upload writes its record: at every state change, and its count every
// WriteInterval (so readers elsewhere see the count as of the last write).
// One subscription per Progress carries cancel messages to the requests
// here, and change messages to the watchers here.
//
// What it keeps, and for how long:
//   - A record is in flight with the lease as its TTL while a request
//     receives it; the receiving instance renews it at every write. An
//     instance that dies stops renewing, so its uploads' records go within
//     a lease: a reader then answers "starting" (or, for a resumable
//     upload, what its store says), and the id is free again. They do not
//     stay "uploading" forever, nor turn to "error": nobody is left to say
//     how they ended.
//   - A resumable upload between requests (Leave) keeps its record for
//     Idle, so that progress, the busy id, Expire and a cancel still find
//     it until its next PATCH, at any instance.
//   - A finished record stays for the retention (its TTL, and by the
//     registry's clock for Lookup and Cancel); beyond MaxFinished the
//     oldest go first (a sorted set by end time, kept with the retention
//     as its TTL). With every upload finished and past retention, no
//     progress key is left.
//   - A cancel sets a flag in the record and sends a message: the instance
//     receiving the upload stops its request at once, or at its next write
//     (WriteInterval) when it missed the message.
//
// Limits: one Redis node (the scripts touch several keys, so Redis Cluster
// is not supported); Configure applies to the instance it is called on; if
// Redis is unreachable for longer than a lease, uploads in flight go on but
// their records are gone, and they are no longer counted in Local.
type Progress struct {
	client   redis.UniversalClient
	prefix   string
	lease    time.Duration
	idle     time.Duration
	interval time.Duration
	now      func() time.Time

	sub    *redis.PubSub
	cancel context.CancelFunc
	done   chan struct{} // closed when both loops have ended

	mu          sync.Mutex
	retention   time.Duration
	maxFinished int
	local       map[string]*localUpload // the uploads requests here receive, by rid
	watches     map[string]*watch
	deaf        bool // tests: cancel messages are not heard
}

// watch is the change signal of one upload, shared by its watchers here.
type watch struct {
	ch   chan struct{}
	refs int
}

// NewProgress subscribes to the progress channels under prefix, starts the
// writer loop and returns the registry. Close it to stop both.
func NewProgress(ctx context.Context, client redis.UniversalClient, prefix string, o ProgressOptions) (*Progress, error) {
	p := &Progress{
		client:      client,
		prefix:      prefix,
		lease:       o.Lease,
		idle:        o.Idle,
		interval:    o.WriteInterval,
		now:         o.Now,
		retention:   progress.DefaultRetention,
		maxFinished: progress.DefaultMaxFinished,
		local:       map[string]*localUpload{},
		watches:     map[string]*watch{},
		done:        make(chan struct{}),
	}
	if p.lease <= 0 {
		p.lease = DefaultProgressLease
	}
	if p.idle <= 0 {
		p.idle = DefaultIdle
	}
	p.idle = max(p.idle, p.lease)
	if p.interval <= 0 {
		p.interval = DefaultWriteInterval
	}
	p.interval = min(p.interval, p.lease/3)
	if p.now == nil {
		p.now = time.Now
	}
	p.Configure(o.Retention, o.MaxFinished)
	if err := writeScript.Load(ctx, client).Err(); err != nil {
		return nil, fmt.Errorf("loading the progress scripts: %w", err)
	}
	p.sub = client.Subscribe(ctx, p.key("progress:cancel"), p.key("progress:changed"))
	if _, err := p.sub.Receive(ctx); err != nil {
		p.sub.Close()
		return nil, fmt.Errorf("subscribing to progress messages: %w", err)
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.listen(loopCtx) }()
	go func() { defer wg.Done(); p.writeLoop(loopCtx) }()
	go func() { wg.Wait(); close(p.done) }()
	return p, nil
}

// Close implements progress.Registry: the subscription and the writer
// loop end. Records of uploads still in flight here are no longer renewed:
// they go after their lease.
func (p *Progress) Close() error {
	p.cancel()
	err := p.sub.Close()
	<-p.done
	return err
}

// Configure implements progress.Registry.
func (p *Progress) Configure(retention time.Duration, maxFinished int) {
	if retention <= 0 {
		retention = progress.DefaultRetention
	}
	if maxFinished <= 0 {
		maxFinished = progress.DefaultMaxFinished
	}
	p.mu.Lock()
	p.retention, p.maxFinished = retention, maxFinished
	p.mu.Unlock()
}

func (p *Progress) key(s string) string { return p.prefix + s }

// rid is the part of an upload's keys and messages that names it.
func rid(k progress.Key) string {
	owner := ""
	if k.Owner != "" {
		s := sha256.Sum256([]byte(k.Owner))
		owner = hex.EncodeToString(s[:])
	}
	return owner + ":" + k.ID
}

func (p *Progress) recordKey(rid string) string { return p.key("progress:up:" + rid) }
func (p *Progress) tusKey(id string) string     { return p.key("progress:tus:" + id) }

// Start implements progress.Registry.
func (p *Progress) Start(ctx context.Context, key progress.Key, b progress.Begin) (progress.Upload, error) {
	return p.begin(ctx, key, b, "start")
}

// Attach implements progress.Registry.
func (p *Progress) Attach(ctx context.Context, key progress.Key, b progress.Begin) (progress.Upload, error) {
	return p.begin(ctx, key, b, "attach")
}

func (p *Progress) begin(ctx context.Context, key progress.Key, b progress.Begin, mode string) (progress.Upload, error) {
	counter := b.Counter
	if counter == nil {
		counter = new(atomic.Int64)
	}
	r := rid(key)
	var g [8]byte
	rand.Read(g[:])
	gen := hex.EncodeToString(g[:])
	now := p.now().UnixNano()
	res, err := beginScript.Run(ctx, p.client, []string{p.recordKey(r), p.tusKey(key.ID)},
		mode, gen, b.Kind, b.Size, now, counter.Load(), now, p.lease.Milliseconds(), p.idle.Milliseconds(),
		p.key("progress:changed"), r).Slice()
	if err != nil {
		return nil, fmt.Errorf("registering upload %s: %w", key.ID, err)
	}
	code, _ := res[0].(int64)
	cancelled := false
	switch code {
	case 0:
		return nil, progress.ErrIDInUse
	case 1:
		gen, _ = res[1].(string)
		c, _ := res[3].(int64)
		cancelled = c == 1
	case 2:
		return &redisUpload{key: key, kind: b.Kind, counter: counter, cancel: b.Cancel, doneAlone: make(chan struct{})}, nil
	}

	p.mu.Lock()
	l := p.local[r]
	if l != nil && l.gen != gen {
		p.endLocked(l) // an upload under the key that ended elsewhere
		l = nil
	}
	if l == nil {
		l = &localUpload{p: p, key: key, rid: r, kind: b.Kind, gen: gen, counter: counter,
			reqs: map[*redisUpload]struct{}{}, cancelled: make(chan struct{}), done: make(chan struct{})}
		p.local[r] = l
	}
	u := &redisUpload{l: l, cancel: b.Cancel}
	l.reqs[u] = struct{}{}
	p.mu.Unlock()
	if cancelled || isClosed(l.cancelled) {
		l.cancelLocal() // a cancel that came before this request
	}
	return u, nil
}

// Lookup implements progress.Registry.
func (p *Progress) Lookup(ctx context.Context, key progress.Key) (progress.Snapshot, bool, error) {
	m, err := p.client.HGetAll(ctx, p.recordKey(rid(key))).Result()
	if err != nil {
		return progress.Snapshot{}, false, fmt.Errorf("reading the progress of %s: %w", key.ID, err)
	}
	if m["state"] == "" {
		return progress.Snapshot{}, false, nil
	}
	num := func(f string) int64 {
		n, _ := strconv.ParseInt(m[f], 10, 64)
		return n
	}
	started, at := time.Unix(0, num("started")), time.Unix(0, num("at"))
	if progress.Final(m["state"]) && p.forgotten(at) {
		return progress.Snapshot{}, false, nil // its TTL is about to end it
	}
	s := progress.Snapshot{
		ID:        key.ID,
		Kind:      m["kind"],
		State:     m["state"],
		Received:  num("received"),
		StartedAt: &started,
		Status:    int(num("status")),
		Code:      m["code"],
		Files:     progress.FilesOf([]byte(m["files"])),
	}
	if size := num("size"); size >= 0 {
		s.Size = &size
	}
	s.Speed = progress.Speed(s.Received, started, at)
	return s, true, nil
}

// forgotten reports whether an upload that ended at the given time is past
// retention by the registry's clock. The record's TTL bounds Redis's memory
// in real time; this check makes a replaced clock (tests) forget as Memory
// does. Instances whose clocks differ forget by as much earlier or later.
func (p *Progress) forgotten(ended time.Time) bool {
	p.mu.Lock()
	retention := p.retention
	p.mu.Unlock()
	return !ended.After(p.now().Add(-retention))
}

// Watch implements progress.Registry: the signal comes with the change
// messages (start, finish, cancel); the count is not signalled.
func (p *Progress) Watch(key progress.Key) (<-chan struct{}, func()) {
	r := rid(key)
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.watches[r]
	if w == nil {
		w = &watch{ch: make(chan struct{})}
		p.watches[r] = w
	}
	w.refs++
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if w.refs--; w.refs == 0 && p.watches[r] == w {
				delete(p.watches, r)
			}
		})
	}
}

// Cancel implements progress.Registry: the flag is set in the record and
// the instance receiving the upload is told by message; one that missed
// the message reads the flag at its next write.
func (p *Progress) Cancel(ctx context.Context, key progress.Key) error {
	r := rid(key)
	p.mu.Lock()
	retention := p.retention
	p.mu.Unlock()
	n, err := cancelScript.Run(ctx, p.client, []string{p.recordKey(r)},
		p.key("progress:cancel"), p.key("progress:changed"), r, p.now().Add(-retention).UnixNano()).Int64()
	switch {
	case err != nil:
		return fmt.Errorf("cancelling upload %s: %w", key.ID, err)
	case n == 0:
		return progress.ErrNotFound
	case n == 2:
		return progress.ErrFinished
	}
	return nil
}

// Expire implements progress.Registry.
func (p *Progress) Expire(ctx context.Context, id string) error {
	p.mu.Lock()
	retention, maxFinished := p.retention, p.maxFinished
	p.mu.Unlock()
	err := expireScript.Run(ctx, p.client, []string{p.tusKey(id), p.key("progress:finished")},
		p.now().UnixNano(), retention.Milliseconds(), maxFinished, p.key("progress:changed"),
		http.StatusGone, "upload-expired", len(p.recordKey(""))).Err()
	if err != nil {
		return fmt.Errorf("expiring upload %s: %w", id, err)
	}
	return nil
}

// Local implements progress.Registry.
func (p *Progress) Local(kind string) []progress.Upload {
	p.mu.Lock()
	defer p.mu.Unlock()
	var list []progress.Upload
	for _, l := range p.local {
		if l.kind == kind {
			for u := range l.reqs {
				list = append(list, u)
			}
		}
	}
	return list
}

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
