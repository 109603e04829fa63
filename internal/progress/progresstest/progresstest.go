// Package progresstest is the contract every progress.Registry passes: the
// tests of each implementation call Run with a way to make registries that
// share their uploads (instances of one site on a shared store, or one
// process's registry given out again).
package progresstest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
)

// wait bounds every wait of the contract: a count written, a change
// signalled, a cancel delivered must all be seen well within it.
const wait = 3 * time.Second

// Run runs the contract against registries made by newRegistry. Every
// registry it returns within one subtest must share its uploads with the
// others of that subtest (and with no other subtest's).
func Run(t *testing.T, newRegistry func(t *testing.T) progress.Registry) {
	ctx := context.Background()

	t.Run("start, count, finish", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		key := progress.Key{Owner: "o", ID: "u1"}
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: 100})
		up.Counter().Add(40)
		s := eventually(t, b, key, func(s progress.Snapshot) bool { return s.Received == 40 })
		if s.State != progress.StateUploading || s.Kind != progress.KindMultipart || s.ID != "u1" ||
			s.Size == nil || *s.Size != 100 || s.StartedAt == nil || s.Files != nil {
			t.Errorf("in flight: %+v", s)
		}
		files := []byte(`[{"name":"a.txt","size":40}]`)
		if err := up.Finish(ctx, progress.End{State: progress.StateDone, Files: files}); err != nil {
			t.Fatal(err)
		}
		up.Counter().Add(10) // after the end: not counted
		s = eventually(t, b, key, func(s progress.Snapshot) bool { return s.State == progress.StateDone })
		if s.Received != 40 || string(s.Files) != string(files) || s.Status != 0 || s.Code != "" {
			t.Errorf("done: %+v (files %s)", s, s.Files)
		}
		select {
		case <-up.Done():
		default:
			t.Error("Done not closed after Finish")
		}
	})

	t.Run("unknown size and no files", func(t *testing.T) {
		a := newRegistry(t)
		key := progress.Key{ID: "nosize"}
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		if err := up.Finish(ctx, progress.End{State: progress.StateError, Status: 413, Code: "request-too-large", Files: []byte("null")}); err != nil {
			t.Fatal(err)
		}
		s := mustLookup(t, a, key)
		if s.Size != nil || s.Files != nil || s.State != progress.StateError || s.Status != 413 || s.Code != "request-too-large" {
			t.Errorf("%+v", s)
		}
	})

	t.Run("an id in flight is refused, a finished one is reused", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		key := progress.Key{Owner: "o", ID: "busy"}
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		for name, r := range map[string]progress.Registry{"same": a, "other": b} {
			if _, err := r.Start(ctx, key, progress.Begin{Kind: progress.KindMultipart, Size: -1}); !errors.Is(err, progress.ErrIDInUse) {
				t.Errorf("Start of an id in flight (%s registry): %v, want ErrIDInUse", name, err)
			}
		}
		// Another owner's upload of the same id is another upload.
		other := mustStart(t, b, progress.Key{Owner: "p", ID: "busy"}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		other.Finish(ctx, progress.End{State: progress.StateDone})
		up.Counter().Add(7)
		up.Finish(ctx, progress.End{State: progress.StateDone})
		again := mustStart(t, b, key, progress.Begin{Kind: progress.KindMultipart, Size: 3})
		s := mustLookup(t, a, key)
		if s.State != progress.StateUploading || s.Received != 0 || s.Size == nil || *s.Size != 3 {
			t.Errorf("the id used again: %+v, want a new upload", s)
		}
		again.Finish(ctx, progress.End{State: progress.StateDone})
	})

	t.Run("owner scoping", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		key := progress.Key{Owner: "alice", ID: "mine"}
		var cancelled atomic.Bool
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1,
			Cancel: func(error) { cancelled.Store(true) }})
		for _, owner := range []string{"", "bob"} {
			if s, ok, err := b.Lookup(ctx, progress.Key{Owner: owner, ID: "mine"}); err != nil || ok {
				t.Errorf("owner %q sees %+v (%v)", owner, s, err)
			}
			if err := b.Cancel(ctx, progress.Key{Owner: owner, ID: "mine"}); !errors.Is(err, progress.ErrNotFound) {
				t.Errorf("owner %q cancels: %v, want ErrNotFound", owner, err)
			}
		}
		if cancelled.Load() {
			t.Error("another owner's cancel reached the upload")
		}
		up.Finish(ctx, progress.End{State: progress.StateDone})
	})

	t.Run("attach joins an upload in flight", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		key := progress.Key{ID: "tus1"}
		c1 := new(atomic.Int64)
		c1.Store(10)
		first := mustAttach(t, a, key, progress.Begin{Kind: progress.KindTus, Size: 100, Counter: c1})
		s1 := eventually(t, b, key, func(s progress.Snapshot) bool { return s.Received == 10 })
		// A second PATCH takes over in the same process while the first
		// one stops: they share the count.
		second := mustAttach(t, a, key, progress.Begin{Kind: progress.KindTus, Size: 100, Counter: new(atomic.Int64)})
		if second.Counter() != c1 {
			t.Error("Attach in the same process must hand out the upload's counter")
		}
		first.Leave()
		second.Counter().Store(30)
		s2 := eventually(t, b, key, func(s progress.Snapshot) bool { return s.Received == 30 })
		if !s2.StartedAt.Equal(*s1.StartedAt) || s2.State != progress.StateUploading {
			t.Errorf("after a second PATCH: %+v; want the same upload (started %v)", s2, s1.StartedAt)
		}
		// A PATCH at another instance joins the same upload.
		c3 := new(atomic.Int64)
		c3.Store(30)
		third := mustAttach(t, b, key, progress.Begin{Kind: progress.KindTus, Size: 100, Counter: c3})
		second.Leave()
		third.Counter().Store(100)
		if err := third.Finish(ctx, progress.End{State: progress.StateDone}); err != nil {
			t.Fatal(err)
		}
		s := eventually(t, a, key, func(s progress.Snapshot) bool { return s.State == progress.StateDone })
		if s.Received != 100 || !s.StartedAt.Equal(*s1.StartedAt) {
			t.Errorf("done: %+v", s)
		}
		// After the end, Attach starts anew (a partial upload terminated
		// after it was complete, a restart).
		again := mustAttach(t, b, key, progress.Begin{Kind: progress.KindTus, Size: 100})
		again.Finish(ctx, progress.End{State: progress.StateCancelled, Status: 409, Code: "upload-cancelled"})
		if s := mustLookup(t, a, key); s.State != progress.StateCancelled {
			t.Errorf("after a new attach and its end: %+v", s)
		}
	})

	t.Run("attach leaves an upload of another kind alone", func(t *testing.T) {
		a := newRegistry(t)
		key := progress.Key{ID: "shared-id"}
		mp := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		mp.Counter().Store(5)
		tu := mustAttach(t, a, key, progress.Begin{Kind: progress.KindTus, Size: 9})
		tu.Counter().Store(9)
		if err := tu.Finish(ctx, progress.End{State: progress.StateDone}); err != nil {
			t.Fatal(err)
		}
		s := eventually(t, a, key, func(s progress.Snapshot) bool { return s.Received == 5 })
		if s.Kind != progress.KindMultipart || s.State != progress.StateUploading {
			t.Errorf("%+v; want the standard upload untouched", s)
		}
		mp.Finish(ctx, progress.End{State: progress.StateDone})
	})

	t.Run("finish with the context of a cancelled request", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		key := progress.Key{ID: "gone"}
		reqCtx, cancel := context.WithCancelCause(ctx)
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1, Cancel: cancel})
		if err := b.Cancel(ctx, key); err != nil {
			t.Fatal(err)
		}
		<-up.Cancelled()
		waitClosed(t, reqCtx.Done(), "cancel")
		if err := up.Finish(reqCtx, progress.End{State: progress.StateCancelled, Status: 409, Code: "upload-cancelled"}); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		if s := mustLookup(t, b, key); s.State != progress.StateCancelled {
			t.Errorf("after Finish with an ended context: %+v", s)
		}
	})

	t.Run("finish: the first end counts", func(t *testing.T) {
		a := newRegistry(t)
		key := progress.Key{ID: "twice"}
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		up.Finish(ctx, progress.End{State: progress.StateCancelled, Status: 409, Code: "upload-cancelled"})
		up.Finish(ctx, progress.End{State: progress.StateDone})
		if s := mustLookup(t, a, key); s.State != progress.StateCancelled {
			t.Errorf("%+v", s)
		}
		left := mustAttach(t, a, progress.Key{ID: "left"}, progress.Begin{Kind: progress.KindTus, Size: -1})
		left.Leave()
		left.Finish(ctx, progress.End{State: progress.StateDone})
		if s := mustLookup(t, a, progress.Key{ID: "left"}); s.State != progress.StateUploading {
			t.Errorf("Finish after Leave changed the upload: %+v", s)
		}
	})

	t.Run("cancel reaches the request from any registry", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		key := progress.Key{Owner: "o", ID: "stop-me"}
		causes := make(chan error, 4)
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1,
			Cancel: func(cause error) { causes <- cause }})
		if err := b.Cancel(ctx, key); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		select {
		case cause := <-causes:
			if !errors.Is(cause, progress.ErrCancelled) {
				t.Errorf("cause %v, want ErrCancelled", cause)
			}
		case <-time.After(wait):
			t.Fatal("the request's cancel was not called")
		}
		select {
		case <-up.Cancelled():
		case <-time.After(wait):
			t.Fatal("Cancelled not closed")
		}
		// Cancel does not end the upload: its request does, once clean.
		if s := mustLookup(t, b, key); s.State != progress.StateUploading {
			t.Errorf("after Cancel, before the request ended: %+v", s)
		}
		up.Finish(ctx, progress.End{State: progress.StateCancelled, Status: 409, Code: "upload-cancelled"})
		if err := b.Cancel(ctx, key); !errors.Is(err, progress.ErrFinished) {
			t.Errorf("Cancel of a finished upload: %v, want ErrFinished", err)
		}
		if err := b.Cancel(ctx, progress.Key{Owner: "o", ID: "never"}); !errors.Is(err, progress.ErrNotFound) {
			t.Errorf("Cancel of an unknown upload: %v, want ErrNotFound", err)
		}
	})

	t.Run("cancel of a resumable upload between requests", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		key := progress.Key{ID: "parked"}
		mustAttach(t, a, key, progress.Begin{Kind: progress.KindTus, Size: 50}).Leave()
		if err := b.Cancel(ctx, key); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		// The next request of the upload is told at once.
		causes := make(chan error, 4)
		up := mustAttach(t, a, key, progress.Begin{Kind: progress.KindTus, Size: 50,
			Cancel: func(cause error) { causes <- cause }})
		select {
		case <-causes:
		case <-time.After(wait):
			t.Fatal("a request attaching to a cancelled upload was not cancelled")
		}
		select {
		case <-up.Cancelled():
		default:
			t.Error("Cancelled not closed")
		}
		up.Finish(ctx, progress.End{State: progress.StateCancelled, Status: 409, Code: "upload-cancelled"})
	})

	t.Run("watch signals start and finish", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		key := progress.Key{ID: "watched"}
		changed, stop := b.Watch(key)
		defer stop()
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		waitClosed(t, changed, "start")
		changed2, stop2 := b.Watch(key)
		defer stop2()
		if err := up.Finish(ctx, progress.End{State: progress.StateDone}); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, changed2, "finish")
	})

	t.Run("expire ends resumable uploads of every owner", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		var ups []progress.Upload
		for _, owner := range []string{"", "x", "y"} {
			up := mustAttach(t, a, progress.Key{Owner: owner, ID: "old"}, progress.Begin{Kind: progress.KindTus, Size: 10})
			up.Counter().Store(4)
			up.Leave()
			ups = append(ups, up)
		}
		other := mustAttach(t, a, progress.Key{ID: "young"}, progress.Begin{Kind: progress.KindTus, Size: 10})
		if err := b.Expire(ctx, "old"); err != nil {
			t.Fatal(err)
		}
		for _, owner := range []string{"", "x", "y"} {
			s := mustLookup(t, a, progress.Key{Owner: owner, ID: "old"})
			if s.State != progress.StateError || s.Status != http.StatusGone || s.Code != "upload-expired" || s.Received != 4 {
				t.Errorf("owner %q after Expire: %+v", owner, s)
			}
		}
		if s := mustLookup(t, b, progress.Key{ID: "young"}); s.State != progress.StateUploading {
			t.Errorf("another upload after Expire: %+v", s)
		}
		other.Finish(ctx, progress.End{State: progress.StateDone})
	})

	t.Run("local uploads can be stopped and waited for", func(t *testing.T) {
		a, b := newRegistry(t), newRegistry(t)
		causes := make(chan error, 4)
		stopErr := errors.New("shutting down")
		up := mustStart(t, a, progress.Key{ID: "here"}, progress.Begin{Kind: progress.KindMultipart, Size: -1,
			Cancel: func(cause error) { causes <- cause }})
		elsewhere := mustStart(t, b, progress.Key{ID: "there"}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		defer elsewhere.Finish(ctx, progress.End{State: progress.StateDone})
		tus := mustAttach(t, a, progress.Key{ID: "tus-here"}, progress.Begin{Kind: progress.KindTus, Size: -1})
		defer tus.Finish(ctx, progress.End{State: progress.StateDone})
		// Registries that are one process (Memory) list "there" too; a
		// shared implementation tests that it does not.
		var here progress.Upload
		for _, u := range a.Local(progress.KindMultipart) {
			switch u.Key().ID {
			case "here":
				here = u
			case "tus-here":
				t.Error("Local(multipart) lists a resumable upload")
			}
		}
		if here == nil {
			t.Fatalf("Local: %v, want the standard upload of this registry", keys(a.Local(progress.KindMultipart)))
		}
		here.Stop(stopErr)
		if cause := <-causes; cause != stopErr {
			t.Errorf("Stop's cause %v", cause)
		}
		go up.Finish(ctx, progress.End{State: progress.StateError, Status: 503, Code: "server-shutting-down"})
		waitClosed(t, here.Done(), "finish")
		for _, u := range a.Local(progress.KindMultipart) {
			if u.Key().ID == "here" {
				t.Error("Local lists an upload after its end")
			}
		}
	})

	t.Run("cap: the oldest finished go first", func(t *testing.T) {
		a := newRegistry(t)
		a.Configure(time.Hour, 5)
		for i := range 20 {
			up := mustStart(t, a, progress.Key{ID: fmt.Sprint(i)}, progress.Begin{Kind: progress.KindMultipart, Size: -1})
			up.Finish(ctx, progress.End{State: progress.StateDone})
		}
		for i := range 20 {
			_, ok, err := a.Lookup(ctx, progress.Key{ID: fmt.Sprint(i)})
			if err != nil {
				t.Fatal(err)
			}
			if want := i >= 15; ok != want {
				t.Errorf("upload %d held: %v, want %v", i, ok, want)
			}
		}
	})

	t.Run("retention", func(t *testing.T) {
		a := newRegistry(t)
		const retention = 400 * time.Millisecond
		a.Configure(retention, 0)
		key := progress.Key{ID: "brief"}
		up := mustStart(t, a, key, progress.Begin{Kind: progress.KindMultipart, Size: -1})
		up.Finish(ctx, progress.End{State: progress.StateDone})
		ended := time.Now()
		if _, ok, _ := a.Lookup(ctx, key); !ok {
			t.Fatal("forgotten at once")
		}
		for {
			_, ok, err := a.Lookup(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if time.Since(ended) > retention+wait {
				t.Fatalf("still held %v after its end; retention %v", time.Since(ended), retention)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if held := time.Since(ended); held < retention*3/4 {
			t.Errorf("forgotten after %v; retention %v", held, retention)
		}
	})
}

func keys(list []progress.Upload) []progress.Key {
	var k []progress.Key
	for _, u := range list {
		k = append(k, u.Key())
	}
	return k
}

func mustStart(t *testing.T, r progress.Registry, key progress.Key, b progress.Begin) progress.Upload {
	t.Helper()
	up, err := r.Start(context.Background(), key, b)
	if err != nil {
		t.Fatalf("Start(%v): %v", key, err)
	}
	return up
}

func mustAttach(t *testing.T, r progress.Registry, key progress.Key, b progress.Begin) progress.Upload {
	t.Helper()
	up, err := r.Attach(context.Background(), key, b)
	if err != nil {
		t.Fatalf("Attach(%v): %v", key, err)
	}
	return up
}

func mustLookup(t *testing.T, r progress.Registry, key progress.Key) progress.Snapshot {
	t.Helper()
	s, ok, err := r.Lookup(context.Background(), key)
	if err != nil || !ok {
		t.Fatalf("Lookup(%v): %v, %v", key, ok, err)
	}
	return s
}

// eventually looks the upload up until cond holds (a shared registry shows
// the count as of its last write, a few times a second).
func eventually(t *testing.T, r progress.Registry, key progress.Key, cond func(progress.Snapshot) bool) progress.Snapshot {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		s, ok, err := r.Lookup(context.Background(), key)
		if err != nil {
			t.Fatalf("Lookup(%v): %v", key, err)
		}
		if ok && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lookup(%v) after %v: %+v (held %v)", key, wait, s, ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(wait):
		t.Fatalf("no signal within %v after %s", wait, what)
	}
}
