package redisstate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
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
