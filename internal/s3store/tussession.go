package s3store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// The writing of one tus append: its spool, its parts, its save.

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
