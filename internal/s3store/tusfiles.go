package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// Files holds the resumable uploads of the handlers in the tus layout of
// tus.go, so that any instance sharing the bucket can go on with one:
//
//   - One object per upload is the commit point: its state object holds
//     the handler's tus.Info beside the layout (parts, tail), and every
//     save is a conditional write on the ETag this writer loaded. A writer
//     whose state is stale (another instance saved meanwhile) fails there
//     with tus.ErrStale and its bytes are never counted.
//   - Append loads the state and starts at its offset; its bytes spool
//     into a local file of one part, each whole part is uploaded to the
//     upload's multipart upload under the next part number, and Save
//     stores what is left in a fresh tail object before it commits. The
//     Info that Load gives has the layout's offset.
//   - Put of TusFile(id) completes the multipart upload with the parts the
//     state lists (their ETags, so that bytes a stale writer put there
//     fail it). An upload made by CreateAs (under overwrite and reject)
//     has its multipart upload under its name and is completed there with
//     the conflict policy (If-None-Match: * under reject), with no copy;
//     one made by Create (rename) is completed under its private key and
//     copied under the name the batch finds free.

// tusSession is the writing of one Append: the bytes since the last save
// are in the spool (the tail first) and in the parts uploaded since.
type tusSession struct {
	f   *Files
	id  string
	key string // of the multipart upload

	mu        sync.Mutex
	etag      string    // of the state this session loaded or saved last
	start     TusInfo   // the layout at Append
	committed TusInfo   // the layout saved last (start, until a save)
	saved     bool      // a save of this session committed
	parts     []tusPart // counted: those of the layout and those sent since
	uploadID  string
	up        *partUploader // the parts on their way since the last count, if any
	spool     *partFile     // the bytes since the last whole part
	dirty     bool          // the spool differs from the committed tail
	made      []string      // the tails this session stored
	err       error         // sticky: the session cannot go on
	closed    bool
}

// TusFile implements the handlers' name of a complete resumable upload:
// what Batch.Put takes to publish it.
func (f *Files) TusFile(id string) string { return tusDir + id }

// tusHandle gives the upload id of a name TusFile made.
func tusHandle(name string) (string, bool) {
	id, ok := strings.CutPrefix(name, tusDir)
	return id, ok && tus.ValidID(id)
}

// Create implements tus.Data: the state of an empty upload, whose Info the
// handler's first Save gives. Its multipart upload starts with its first
// whole part.
func (f *Files) Create(ctx context.Context, id string) error {
	u := &TusUpload{Info: TusInfo{ID: id, Size: -1, Created: time.Now().UTC()}}
	return f.s.saveTus(ctx, u, true)
}

// CreateAs implements tus.NamedData: Create for an upload published under
// name or not at all, whose multipart upload is made under name (the state
// names it before its first part, so that removal and the sweepers find
// it) and completed in place by Put.
func (f *Files) CreateAs(ctx context.Context, id, name string) error {
	if isPrivate(name) {
		return fmt.Errorf("s3: %q is in the private folder", name)
	}
	u := &TusUpload{Info: TusInfo{ID: id, Size: -1, Created: time.Now().UTC(), Name: name}}
	return f.s.saveTus(ctx, u, true)
}

// session is the open Append of upload id in this process, if any.
func (f *Files) session(id string) *tusSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[id]
}

// Append implements tus.Data: it loads the state, checks its parts and
// tail against the store, and writes from its offset, which must be
// offset (else tus.ErrStale: another writer moved it).
func (f *Files) Append(ctx context.Context, id string, offset int64) (tus.Appender, error) {
	ctx = context.WithoutCancel(ctx)
	u, err := f.s.getTus(ctx, id)
	if err != nil {
		return nil, tusNotFound(id, err)
	}
	if u.Info.Upload == nil {
		return nil, fmt.Errorf("upload %s: %w", id, fs.ErrNotExist)
	}
	if u.Info.Completed {
		return nil, fmt.Errorf("s3: upload %s is complete", id)
	}
	if err := f.s.verifyTus(ctx, u); err != nil {
		return nil, err
	}
	if got := u.Info.Offset(); got != offset {
		return nil, fmt.Errorf("%w: it is at %d, not %d", ErrStale, got, offset)
	}
	spool, err := f.s.newPartFile()
	if err != nil {
		return nil, err
	}
	ss := &tusSession{
		f: f, id: id, key: f.s.tusUploadKey(&u.Info), etag: u.etag, start: u.Info, committed: u.Info,
		parts: append([]tusPart(nil), u.Info.Parts...), uploadID: u.Info.UploadID, spool: spool,
	}
	if t := u.Info.Tail; t != "" {
		out, err := f.s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &f.s.bucket, Key: &t})
		if err == nil {
			_, err = io.Copy(partWriter{spool}, out.Body)
			out.Body.Close()
		}
		if err != nil || spool.fill != u.Info.TailSize {
			ss.removeSpool()
			return nil, fmt.Errorf("s3: reading the tail: %d bytes, %v", spool.fill, err)
		}
	}
	f.mu.Lock()
	f.sessions[id] = ss
	f.mu.Unlock()
	return ss, nil
}

// Write implements tus.Appender: p goes to the spool, and each whole part
// to the multipart upload.
func (ss *tusSession) Write(p []byte) (int, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.err != nil {
		return 0, ss.err
	}
	n := 0
	for n < len(p) {
		k := min(int64(len(p)-n), ss.f.s.partSize-ss.spool.fill)
		if _, err := ss.spool.write(p[n : n+int(k)]); err != nil {
			return n, fmt.Errorf("s3: spool: %w", err)
		}
		n += int(k)
		ss.dirty = true
		if ss.spool.fill == ss.f.s.partSize {
			if err := ss.uploadPart(); err != nil {
				ss.err = err
				return n, err
			}
		}
	}
	return n, nil
}

// uploadPart hands the spool to the background uploads as the next part
// (partuploader.go: at most maxInFlight at once, while the body is read on
// into a new spool), once the state is still the one this session saved
// last: a writer that lost its turn stops here, before it can put a part
// where the new writer puts its own.
func (ss *tusSession) uploadPart() error {
	ctx := context.Background()
	if err := ss.fresh(ctx); err != nil {
		return err
	}
	if ss.uploadID == "" {
		if err := ss.startUpload(ctx); err != nil {
			return err
		}
	}
	if ss.up == nil {
		ss.up = ss.f.s.newPartUploader(ctx, ss.key, ss.uploadID)
		if n := len(ss.parts); n > 0 {
			ss.up.first = ss.parts[n-1].Number
		}
	}
	if ss.up.count() >= maxParts {
		return fmt.Errorf("s3: the upload has more than %d parts", maxParts)
	}
	if err := ss.up.reserve(); err != nil {
		return err
	}
	next, err := ss.f.s.newPartFile()
	if err != nil {
		// No file for the next part: this one goes now, and its file
		// takes the next one.
		ss.up.release()
		if err := ss.up.uploadNow(ss.spool); err != nil {
			return err
		}
		ss.spool.reset()
		return nil
	}
	ss.up.start(ss.spool)
	ss.spool = next
	return nil
}

// startUpload starts the upload's multipart upload. One under the file's
// name is named in the state (saved over the one this session knows)
// before any part goes there: removal, expiry and the sweepers find it
// by the state, as a listing of the tus folder does not.
func (ss *tusSession) startUpload(ctx context.Context) error {
	out, err := ss.f.s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &ss.f.s.bucket, Key: &ss.key})
	if err != nil {
		return fmt.Errorf("s3: starting the multipart upload: %w", err)
	}
	uploadID := aws.ToString(out.UploadId)
	if ss.committed.Name != "" {
		u := &TusUpload{Info: ss.committed, etag: ss.etag}
		u.Info.UploadID = uploadID
		if err := ss.f.s.saveTus(ctx, u, false); err != nil {
			actx, cancel := cleanupContext(ctx)
			defer cancel()
			ss.f.s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &ss.f.s.bucket, Key: &ss.key, UploadId: &uploadID})
			return err
		}
		ss.etag, ss.committed.UploadID, ss.start.UploadID = u.etag, uploadID, uploadID
	}
	ss.uploadID = uploadID
	return nil
}

// partWriter writes to a part file as an io.Writer.
type partWriter struct{ p *partFile }

func (w partWriter) Write(b []byte) (int, error) { return w.p.write(b) }

// waitParts waits for the parts on their way, if any, and counts them.
func (ss *tusSession) waitParts() error {
	if ss.up == nil {
		return nil
	}
	up := ss.up
	ss.up = nil
	parts, err := up.wait()
	up.cancel(nil)
	if err != nil {
		return err
	}
	for i, p := range parts {
		ss.parts = append(ss.parts, tusPart{Number: aws.ToInt32(p.PartNumber), ETag: aws.ToString(p.ETag), Size: up.sizes[i]})
	}
	return nil
}

// fresh checks that the state is still the one this session saved or
// loaded last: ErrStale otherwise.
func (ss *tusSession) fresh(ctx context.Context) error {
	key := ss.f.s.tusKey(ss.id, ".info")
	head, err := ss.f.s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &ss.f.s.bucket, Key: &key})
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("upload %s: %w", ss.id, fs.ErrNotExist)
		}
		return fmt.Errorf("s3: reading the upload's state: %w", err)
	}
	if aws.ToString(head.ETag) != ss.etag {
		return ErrStale
	}
	return nil
}

// Sync implements tus.Appender: nothing to do, Save stores the bytes
// before it commits them, whatever the fsync setting.
func (*tusSession) Sync() error { return nil }

// Close implements tus.Appender: the spool goes, and the tails this
// session stored that no state names (its own replaced ones, and the one
// it started from once it committed another).
func (ss *tusSession) Close() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return nil
	}
	ss.closed = true
	if ss.up != nil {
		// Parts never counted; let those in flight end, so that none
		// lands after a Remove that follows (see partUploader.drain).
		ss.up.drain(drainWait)
		ss.up = nil
	}
	ss.f.mu.Lock()
	if ss.f.sessions[ss.id] == ss {
		delete(ss.f.sessions, ss.id)
	}
	ss.f.mu.Unlock()
	ss.removeSpool()
	gone := ss.made
	if ss.saved && ss.start.Tail != "" {
		gone = append(gone, ss.start.Tail)
	}
	for _, t := range gone {
		if t != ss.committed.Tail {
			ss.f.s.deleteKey(context.Background(), t)
		}
	}
	return nil
}

func (ss *tusSession) removeSpool() {
	if ss.spool != nil {
		ss.spool.remove()
	}
}

// save commits info with the bytes written so far: the spool is stored as
// a fresh tail, then the state is saved over the one this session knows
// (If-Match). info.Offset is the offset written so far, or the one the
// session started at: the PATCH is taken back whole (its start tail is
// kept until Close for that).
func (ss *tusSession) save(ctx context.Context, info *tus.Info) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.err != nil {
		return ss.err
	}
	if ss.closed {
		return fmt.Errorf("s3: the upload's append is closed")
	}
	if err := ss.waitParts(); err != nil {
		ss.err = err
		return err
	}
	next := ss.committed
	next.Parts, next.UploadID = ss.parts, ss.uploadID
	newTail := ""
	if ss.dirty {
		next.Tail, next.TailSize = "", 0
		if fill := ss.spool.fill; fill > 0 {
			newTail = ss.f.s.tusKey(ss.id, ".tail."+randomID())
			if _, err := ss.f.s.client.PutObject(ctx, &s3.PutObjectInput{
				Bucket: &ss.f.s.bucket, Key: &newTail, ContentLength: aws.Int64(fill), Body: ss.spool.body(),
			}, ss.spool.payload()); err != nil {
				return fmt.Errorf("s3: storing the tail: %w", err)
			}
			next.Tail, next.TailSize = newTail, fill
		}
	}
	rollback := false
	if info.Offset != next.Offset() {
		if info.Offset != ss.start.Offset() {
			if newTail != "" {
				ss.f.s.deleteKey(ctx, newTail)
			}
			return fmt.Errorf("%w: the upload holds %d bytes, not %d", errRollback, next.Offset(), info.Offset)
		}
		// Taken back to where this append started: its parts and tail are
		// left for the next append to overwrite (or the upload's removal).
		if newTail != "" {
			ss.f.s.deleteKey(ctx, newTail)
			newTail = ""
		}
		next = ss.start
		next.UploadID = ss.uploadID
		rollback = true
	}
	next.Size, next.Upload = info.Length, info
	u := &TusUpload{Info: next, etag: ss.etag}
	if err := ss.f.s.saveTus(ctx, u, false); err != nil {
		if newTail != "" {
			ss.f.s.deleteKey(ctx, newTail)
		}
		if errors.Is(err, ErrStale) {
			ss.err = err
		}
		return err
	}
	ss.etag, ss.committed, ss.saved, ss.dirty = u.etag, next, true, false
	if newTail != "" {
		ss.made = append(ss.made, newTail)
	}
	if rollback {
		ss.err = errRollback // the handler ends its append after a rollback
	}
	return nil
}

// errRollback is returned when a save would take back bytes that an
// earlier append committed: S3 keeps them (a multipart upload's parts
// cannot be cut).
var errRollback = fmt.Errorf("%w: committed bytes cannot be taken back", tus.ErrStale)

// ReadHead implements tus.Data: the first bytes are in the tail while the
// upload holds less than one part (its first part, once uploaded, cannot be
// read back before the upload completes).
func (f *Files) ReadHead(ctx context.Context, id string, p []byte) (int, error) {
	ctx = context.WithoutCancel(ctx) // an interrupted request still answers
	u, err := f.s.getTus(ctx, id)
	if err != nil {
		return 0, tusNotFound(id, err)
	}
	key := f.s.tusObject(u)
	if (len(u.Info.Parts) > 0 && !u.Info.Completed) || key == "" || len(p) == 0 {
		if len(u.Info.Parts) > 0 && !u.Info.Completed {
			return 0, fmt.Errorf("s3: the head of upload %s is in a part", id)
		}
		return 0, nil
	}
	out, err := f.s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: &f.s.bucket, Key: &key, Range: aws.String(fmt.Sprintf("bytes=0-%d", len(p)-1)),
	})
	if err != nil {
		return 0, fmt.Errorf("s3: reading the upload's head: %w", err)
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, p)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return n, err
}

// Open implements tus.Reader (concatenation): a whole upload is completed
// into its private object, then read.
func (f *Files) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	ctx = context.WithoutCancel(ctx) // an interrupted request still answers
	u, err := f.s.getTus(ctx, id)
	if err != nil {
		return nil, tusNotFound(id, err)
	}
	if u.Info.Upload == nil || u.Info.Published {
		return nil, fmt.Errorf("upload %s: %w", id, fs.ErrNotExist)
	}
	if u.Info.Size < 0 || u.Info.Offset() != u.Info.Size {
		return nil, fmt.Errorf("s3: upload %s is not complete", id)
	}
	if err := f.s.completeTus(ctx, u); err != nil {
		return nil, err
	}
	key := f.s.tusObject(u)
	if key == "" {
		return io.NopCloser(strings.NewReader("")), nil
	}
	out, err := f.s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &f.s.bucket, Key: &key})
	if err != nil {
		return nil, fmt.Errorf("s3: reading upload %s: %w", id, err)
	}
	return out.Body, nil
}

// Remove implements tus.Data: every multipart upload and object of upload
// id but its state (States.Delete removes that) goes, also those no state
// names (a writer that died before its save).
func (f *Files) Remove(ctx context.Context, id string) error {
	if !tus.ValidID(id) {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	if u, err := f.s.getTus(ctx, id); err == nil && u.Info.Name != "" && u.Info.UploadID != "" {
		// Under the file's name: the state names it.
		_, err := f.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: &f.s.bucket, Key: aws.String(f.s.tusUploadKey(&u.Info)), UploadId: &u.Info.UploadID,
		})
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("s3: aborting the upload: %w", err)
		}
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	key := f.s.tusKey(id, "")
	in := &s3.ListMultipartUploadsInput{Bucket: &f.s.bucket, Prefix: &key}
	for {
		page, err := f.s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return fmt.Errorf("s3: listing the upload's multipart uploads: %w", err)
		}
		for _, up := range page.Uploads {
			_, err := f.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &f.s.bucket, Key: up.Key, UploadId: up.UploadId})
			if err != nil && !isNotFound(err) {
				return fmt.Errorf("s3: aborting the upload: %w", err)
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			break
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
	info := f.s.tusKey(id, ".info")
	p := s3.NewListObjectsV2Paginator(f.s.client, &s3.ListObjectsV2Input{Bucket: &f.s.bucket, Prefix: &key})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3: listing the upload's objects: %w", err)
		}
		for _, o := range page.Contents {
			if aws.ToString(o.Key) == info {
				continue
			}
			if _, err := f.s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &f.s.bucket, Key: o.Key}); err != nil && !isNotFound(err) {
				return fmt.Errorf("s3: removing the upload: %w", err)
			}
		}
	}
	return nil
}

// DeclareLength implements tus.LengthDeferrer: the length is saved with
// the Info that holds it.
func (f *Files) DeclareLength(context.Context, string, int64) error { return nil }

// tusNotFound turns ErrNotFound into an error wrapping fs.ErrNotExist.
func tusNotFound(id string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("upload %s: %w", id, fs.ErrNotExist)
	}
	return err
}

// TusStates gives the states of the resumable uploads in the bucket. fsync
// has no meaning here: a state is durable once its write is answered.
func (f *Files) TusStates(bool) tus.States { return tusStates{f} }

type tusStates struct{ f *Files }

// Load implements tus.States: the Info, with the layout's offset.
func (s tusStates) Load(ctx context.Context, id string) (*tus.Info, error) {
	ctx = context.WithoutCancel(ctx) // an interrupted request still answers
	u, err := s.f.s.getTus(ctx, id)
	if err != nil {
		return nil, tusNotFound(id, err)
	}
	if u.Info.Upload == nil {
		return nil, fmt.Errorf("upload %s: %w", id, fs.ErrNotExist)
	}
	info := *u.Info.Upload
	info.Offset = u.Info.Offset()
	if info.Metadata, err = tus.ParseMetadata(info.MetadataRaw); err != nil {
		return nil, fmt.Errorf("upload state %s: %w", id, err)
	}
	return &info, nil
}

// Save implements tus.States. The open Append of the upload, if any,
// commits its bytes with info; otherwise info is saved over the state as
// it is now, at its offset (tus.ErrStale if the offset is another).
func (s tusStates) Save(ctx context.Context, info *tus.Info) error {
	ctx = context.WithoutCancel(ctx)
	if ss := s.f.session(info.ID); ss != nil {
		return ss.save(ctx, info)
	}
	u, err := s.f.s.getTus(ctx, info.ID)
	create := errors.Is(err, ErrNotFound) && tus.ValidID(info.ID) && (info.Offset == 0 || info.Done)
	if create {
		// A state of its own: a final upload of a concatenation (stored
		// already), or an empty upload.
		u = &TusUpload{Info: TusInfo{ID: info.ID, Size: info.Length, Created: info.Created, Completed: info.Done, Published: info.Done}}
	} else if err != nil {
		return tusNotFound(info.ID, err)
	}
	if got := u.Info.Offset(); got != info.Offset {
		return fmt.Errorf("%w: it is at %d, not %d", ErrStale, got, info.Offset)
	}
	if !u.Info.Completed {
		u.Info.Size = info.Length
	}
	u.Info.Upload = info
	return s.f.s.saveTus(ctx, u, create)
}

// Delete implements tus.States.
func (s tusStates) Delete(ctx context.Context, id string) error {
	if !tus.ValidID(id) {
		return nil
	}
	key := s.f.s.tusKey(id, ".info")
	_, err := s.f.s.client.DeleteObject(context.WithoutCancel(ctx), &s3.DeleteObjectInput{Bucket: &s.f.s.bucket, Key: &key})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("s3: removing the upload's state: %w", err)
	}
	return nil
}

// List implements tus.States: every upload with a state object.
func (s tusStates) List(ctx context.Context) ([]string, error) {
	ctx = context.WithoutCancel(ctx) // an interrupted request still answers
	dir := s.f.s.Key(tusDir)
	var ids []string
	p := s3.NewListObjectsV2Paginator(s.f.s.client, &s3.ListObjectsV2Input{Bucket: &s.f.s.bucket, Prefix: &dir})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3: listing tus uploads: %w", err)
		}
		for _, o := range page.Contents {
			if id, ok := strings.CutSuffix(strings.TrimPrefix(aws.ToString(o.Key), dir), ".info"); ok && tus.ValidID(id) {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// putTus publishes the complete upload id under the i-th name of the plan:
// its parts (those its state lists) are completed under its name with the
// batch's policy when it was made there (CreateAs), else into its private
// object, which is copied under the name; then the data goes (the state,
// marked complete, stays for the handler).
func (b *Batch) putTus(i int, id string) (string, error) {
	ctx := b.f.ctx
	s := b.f.s
	u, err := s.getTus(ctx, id)
	if err != nil {
		return "", tusNotFound(id, err)
	}
	if u.Info.Size < 0 || u.Info.Offset() != u.Info.Size {
		return "", fmt.Errorf("s3: upload %s holds %d of %d bytes", id, u.Info.Offset(), u.Info.Size)
	}
	if u.Info.Published {
		return "", fmt.Errorf("s3: upload %s was published already", id)
	}
	inPlace := u.Info.Name != "" && len(u.Info.Parts) > 0 && !u.Info.Completed
	if !inPlace {
		if err := s.completeTus(ctx, u); err != nil {
			return "", err
		}
	}
	src, size := s.tusObject(u), u.Info.Size
	commit := func(name string, policy Policy) error {
		if inPlace {
			if name != u.Info.Name {
				// Its parts are under its name (a reload turned rename on
				// since it was made): no other name can take them, so a
				// taken name is a conflict, as under reject.
				return fmt.Errorf("%w: upload %s is made to be stored as %q, not %q", ErrExists, id, u.Info.Name, name)
			}
			return s.completeParts(ctx, &u.Info, policy)
		}
		if src == "" {
			w, err := s.NewWriter(ctx, WriterOptions{})
			if err != nil {
				return err
			}
			if err := w.Commit(name, policy); err != nil {
				_ = w.Abort()
				return err
			}
			return nil
		}
		return s.copyObject(ctx, src, size, s.Key(name), policy, "")
	}
	stored, err := b.commit(i, commit)
	if err != nil {
		return "", err
	}
	// The bytes are under their name: the upload's data goes, its state
	// says so.
	u.Info.Completed, u.Info.Published = true, true
	u.Info.Tail, u.Info.TailSize, u.Info.UploadID, u.Info.Parts = "", 0, "", nil
	if err := s.saveTus(ctx, u, false); err == nil {
		// Its private object and tail, and what a writer that died before
		// its save left (a multipart upload no state names).
		_ = b.f.Remove(ctx, id)
	}
	return stored, nil
}

// SweepTusOrphans removes what resumable uploads that no state names left
// in the tus folder before now-age: objects (a tail that a writer stored
// after its upload was removed) and multipart uploads (one a writer
// started before it died). It returns how many it removed.
func (s *Store) SweepTusOrphans(ctx context.Context, age time.Duration, now time.Time) (int, error) {
	cutoff := now.Add(-age)
	dir := s.Key(tusDir)
	idOf := func(key string) string {
		rest := strings.TrimPrefix(key, dir)
		if len(rest) < 32 {
			return ""
		}
		return rest[:32]
	}
	live := map[string]bool{}
	var stale []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &dir})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("s3: listing tus uploads: %w", err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if strings.HasSuffix(key, ".info") {
				live[idOf(key)] = true
			} else if o.LastModified != nil && o.LastModified.Before(cutoff) {
				stale = append(stale, key)
			}
		}
	}
	removed := 0
	for _, key := range stale {
		if id := idOf(key); id != "" && !live[id] {
			s.deleteKey(ctx, key)
			removed++
		}
	}
	in := &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: &dir}
	for {
		page, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return removed, fmt.Errorf("s3: listing multipart uploads: %w", err)
		}
		for _, up := range page.Uploads {
			id := idOf(aws.ToString(up.Key))
			if id == "" || live[id] || up.Initiated == nil || !up.Initiated.Before(cutoff) {
				continue
			}
			if _, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: up.Key, UploadId: up.UploadId}); err == nil {
				removed++
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			break
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
	return removed, nil
}
