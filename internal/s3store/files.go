package s3store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/reflexupload/caddy-reflex-upload/internal/store"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// maxRenameTries bounds the search for a free name under the rename policy.
const maxRenameTries = 1000

// Files is a Store seen as the upload handlers' store.Store: a temp file is
// a Writer (spooled, uploaded part by part, invisible until committed), a
// Publisher commits writers under the request's conflict policy with
// conditional writes, and FS serves the bucket.
// Files holds resumable uploads too (tusfiles.go): tus.Data, tus.Reader,
// tus.LengthDeferrer and TusStates.
type Files struct {
	s      *Store
	ctx    context.Context // bounds serving; cancelled by Close
	cancel context.CancelFunc

	mu       sync.Mutex
	temps    map[string]*Writer     // the writers not yet committed or removed
	sessions map[string]*tusSession // the resumable uploads being appended to
}

// NewFiles wraps s as a store.Store.
func NewFiles(s *Store) *Files {
	ctx, cancel := context.WithCancel(context.Background())
	return &Files{s: s, ctx: ctx, cancel: cancel, temps: map[string]*Writer{}, sessions: map[string]*tusSession{}}
}

// Store is the bucket Files writes to.
func (f *Files) Store() *Store { return f.s }

// Close aborts the writers still open and ends serving.
func (f *Files) Close() error {
	f.mu.Lock()
	temps := f.temps
	f.temps = map[string]*Writer{}
	f.mu.Unlock()
	for _, w := range temps {
		_ = w.Abort()
	}
	f.cancel()
	return nil
}

// temp is an open Writer under the name the handlers know it by.
type temp struct {
	*Writer
	name string
}

func (t temp) Name() string { return t.name }

// Sync does nothing: the bytes are durable once the writer is committed.
func (temp) Sync() error { return nil }

// Close ends the writing; the writer stays open until Put commits it or
// RemoveTemp aborts it.
func (temp) Close() error { return nil }

// CreateTemp implements store.Store: a new Writer. ctx bounds its
// requests. Its name is not known yet, so a large object is staged and
// copied under its name when published (see WriterOptions.Key).
func (f *Files) CreateTemp(ctx context.Context) (store.Temp, error) {
	return f.createTemp(ctx, WriterOptions{})
}

// CreateTempAs implements store.TempsByName: a Writer that makes its
// multipart upload under name and completes it in place when published,
// with no copy.
func (f *Files) CreateTempAs(ctx context.Context, name string) (store.Temp, error) {
	return f.createTemp(ctx, WriterOptions{Key: name})
}

func (f *Files) createTemp(ctx context.Context, opts WriterOptions) (store.Temp, error) {
	w, err := f.s.NewWriter(ctx, opts)
	if err != nil {
		return nil, err
	}
	name := randomID()
	f.mu.Lock()
	f.temps[name] = w
	f.mu.Unlock()
	return temp{Writer: w, name: name}, nil
}

// take removes the writer named name from the open ones.
func (f *Files) take(name string) *Writer {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.temps[name]
	delete(f.temps, name)
	return w
}

// RemoveTemp implements store.Store: the writer is aborted, so that
// neither its multipart upload nor its staging object stays.
func (f *Files) RemoveTemp(name string) {
	if w := f.take(name); w != nil {
		_ = w.Abort()
	}
}

// Exists implements store.Store: an object has the name.
func (f *Files) Exists(ctx context.Context, name string) bool {
	_, err := f.head(ctx, name)
	return err == nil
}

// head is the ETag of the object name; an error wrapping fs.ErrNotExist
// when there is none.
func (f *Files) head(ctx context.Context, name string) (string, error) {
	key := f.s.Key(name)
	out, err := f.s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &f.s.bucket, Key: &key})
	if err != nil {
		if isNotFound(err) {
			return "", fs.ErrNotExist
		}
		return "", err
	}
	if out.ETag == nil {
		return "", nil
	}
	return *out.ETag, nil
}

// FS implements store.Store: the bucket, under the prefix, without the
// private folder.
func (f *Files) FS() fs.StatFS { return f.s.FS(f.ctx).(fs.StatFS) }

// ServeRoot implements store.Store: names are relative to the FS.
func (f *Files) ServeRoot() string { return "." }

// NewBatch implements store.Store. fsync has no meaning here: an object is
// durable once its write is answered.
func (f *Files) NewBatch(policy store.Policy, _ bool) store.Publisher {
	return &Batch{f: f, policy: policy}
}

// A Batch commits the writers of one request under a conflict policy.
//
// Plan checks every name before anything is committed (reject: none
// exists; rename: the free names, "a (1).png" and on; overwrite: nothing),
// and each Put commits one writer: under reject and rename with
// If-None-Match: * (a rename that loses to another request tries its next
// name), under overwrite with a plain write. An object appears whole or
// not at all.
//
// Undo removes the objects the batch created where none was before (an
// object replaced since by another request is left alone: its ETag
// differs). What S3 cannot do is bring back an object that overwrite
// replaced: there is no rename, and keeping a copy of each replaced object
// beforehand would cost a full server-side copy per file. So under
// overwrite, an undone request leaves the files it replaced replaced (the
// new version), and removes only those it created.
type Batch struct {
	f       *Files
	policy  store.Policy
	names   []string
	targets []string
	taken   map[string]bool
	done    []committed
}

// committed is an object a Batch stored, and whether it replaced one.
type committed struct {
	name     string
	etag     string
	replaced bool
}

// Plan implements store.Publisher.
func (b *Batch) Plan(names []string) (int, error) {
	ctx := b.f.ctx
	b.names, b.targets, b.taken = names, make([]string, len(names)), map[string]bool{}
	for i, n := range names {
		target := n
		if b.policy != store.Overwrite {
			_, err := b.f.head(ctx, n)
			exists := err == nil
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return i, err
			}
			switch {
			case b.policy == store.Reject && (exists || b.taken[n]):
				return i, fs.ErrExist
			case b.policy == store.Rename && (exists || b.taken[n]):
				if target = b.freeName(ctx, n); target == "" {
					return i, fs.ErrExist
				}
			}
		}
		b.taken[target] = true
		b.targets[i] = target
	}
	return 0, nil
}

// freeName is the first numbered name that is neither stored nor planned.
func (b *Batch) freeName(ctx context.Context, name string) string {
	for i := 1; i <= maxRenameTries; i++ {
		c := store.Numbered(name, i)
		if b.taken[c] {
			continue
		}
		if _, err := b.f.head(ctx, c); errors.Is(err, fs.ErrNotExist) {
			return c
		}
	}
	return ""
}

// Put implements store.Publisher: tmp is the name of a temp of Files
// (Temp.Name), or TusFile of a complete resumable upload. A writer is
// committed, or aborted on failure (a conflict under reject included):
// either way it is no longer a temp.
func (b *Batch) Put(i int, tmp string) (string, error) {
	w := b.f.take(tmp)
	if w == nil {
		if id, ok := tusHandle(tmp); ok {
			return b.putTus(i, id)
		}
		return "", fmt.Errorf("s3: no temp %q", tmp)
	}
	name, err := b.commit(i, w.Commit)
	if err != nil {
		_ = w.Abort()
	}
	return name, err
}

// commit stores the i-th name of the plan with put, under the batch's
// policy, and records it for Undo.
func (b *Batch) commit(i int, put func(name string, policy Policy) error) (string, error) {
	name := b.targets[i]
	c := committed{name: name}
	var err error
	switch b.policy {
	case store.Overwrite:
		_, herr := b.f.head(b.f.ctx, name)
		c.replaced = herr == nil
		err = put(name, Overwrite)
	case store.Reject:
		err = put(name, Reject)
	default: // rename
		for n := 1; ; n++ {
			err = put(c.name, Reject)
			if !errors.Is(err, ErrExists) || n > maxRenameTries {
				break
			}
			// Another request took the planned name since: the next free one.
			for c.name = store.Numbered(b.names[i], n); b.taken[c.name]; n++ {
				c.name = store.Numbered(b.names[i], n+1)
			}
		}
	}
	if err != nil {
		if errors.Is(err, ErrExists) {
			return "", fmt.Errorf("%w: %s", fs.ErrExist, name)
		}
		return "", err
	}
	c.etag, _ = b.f.head(b.f.ctx, c.name)
	b.done = append(b.done, c)
	return c.name, nil
}

// Undo implements store.Publisher: see Batch.
func (b *Batch) Undo() {
	ctx, cancel := cleanupContext(b.f.ctx)
	defer cancel()
	for i := len(b.done) - 1; i >= 0; i-- {
		c := b.done[i]
		if c.replaced {
			continue
		}
		if etag, err := b.f.head(ctx, c.name); err != nil || etag != c.etag {
			continue // gone, or another request's object since
		}
		b.f.s.deleteKey(ctx, b.f.s.Key(c.name))
	}
	b.done = nil
}

// Keep implements store.Publisher.
func (b *Batch) Keep() { b.done = nil }

var (
	_ store.Store        = (*Files)(nil)
	_ store.TempsByName  = (*Files)(nil)
	_ store.Publisher    = (*Batch)(nil)
	_ tus.Data           = (*Files)(nil)
	_ tus.Reader         = (*Files)(nil)
	_ tus.LengthDeferrer = (*Files)(nil)
	_ tus.States         = tusStates{}
	_ tus.Appender       = (*tusSession)(nil)
)
