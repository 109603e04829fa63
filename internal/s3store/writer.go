package s3store

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// cleanupTimeout bounds the requests that undo a failed or aborted write.
const cleanupTimeout = 30 * time.Second

// drainWait is how long an undone write lets its parts in flight end
// before it cancels them (see partUploader.drain).
const drainWait = 10 * time.Second

// abortAgainAfter is when an abort is repeated, after parts were cancelled
// mid-flight: a part the store finished after the first abort is gone
// then (and the janitor removes what is left after chunk_expiry).
const abortAgainAfter = 2 * time.Second

// copyPartSize is the range of one UploadPartCopy when a staged object is
// copied under its final name (S3 allows 5 MiB to 5 GiB).
const copyPartSize = 1 << 30

// Policy says what Commit does when an object has the key already.
type Policy int

const (
	// Overwrite replaces the object (a reader sees the old one or the new
	// one, never a mix).
	Overwrite Policy = iota
	// Reject commits only when no object has the key (If-None-Match: *)
	// and returns ErrExists otherwise.
	Reject
)

// WriterOptions shape a Writer.
type WriterOptions struct {
	// Key, when set, is the one name (relative to the store) that Commit
	// accepts: a large object's multipart upload is made under it and
	// completes in place, with no copy. Leave it empty when the name may
	// still change, as under a rename policy: a large object's parts then
	// go to a private staging object and each Commit copies it server-side
	// (UploadPartCopy) under the name it is given, so that trying the next
	// name after ErrExists re-sends nothing.
	Key string
	// ContentType is stored with the object; empty means none.
	ContentType string
}

// Writer streams one object of unknown length into the store. Bytes spool
// into a local temp file of one part; each full part is uploaded from its
// file in the background while the next part spools (at most maxInFlight
// at once, see partUploader), so memory per writer stays small whatever
// the object's size, and the caller's bytes keep coming while parts
// upload. A part's failure is returned by the next Write or Commit. An
// object of at most one part is stored with one PutObject and no
// multipart upload. Nothing is visible under the final name until Commit
// succeeds; Abort, a failed request and a cancelled context undo
// everything: the parts in flight are stopped, the multipart upload
// aborted, the staging object and the spool files removed.
//
// A Writer reports its size; a caller that wants a hash writes through an
// io.MultiWriter beside it. It is not safe for concurrent use.
type Writer struct {
	s    *Store
	ctx  context.Context
	opts WriterOptions

	spool *partFile // the part being filled; nil once removed
	size  int64     // bytes written in all

	key      string        // the multipart upload's key (full key)
	uploadID string        // "" when there is none (or no more)
	up       *partUploader // the parts of uploadID
	staged   bool          // the staging object exists (key is its key)

	err    error // the first failure; the writer is undone then
	closed bool
}

// NewWriter starts a writer. ctx bounds every request of the writer (part
// uploads and Commit): its cancellation aborts the write.
func (s *Store) NewWriter(ctx context.Context, opts WriterOptions) (*Writer, error) {
	if opts.Key != "" && isPrivate(opts.Key) {
		return nil, fmt.Errorf("s3: %q is in the private folder", opts.Key)
	}
	p, err := s.newPartFile()
	if err != nil {
		return nil, err
	}
	return &Writer{s: s, ctx: ctx, opts: opts, spool: p}, nil
}

// Size is the number of bytes written so far.
func (w *Writer) Size() int64 { return w.size }

// Write spools p, handing each part the spool fills to the background
// uploads.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if w.spool.fill == w.s.partSize {
			// The spool holds a whole part and more bytes follow: it is not
			// the last part, so it goes now.
			if err := w.sendSpool(); err != nil {
				return n, w.fail(err)
			}
		}
		m, err := w.spool.write(p[:min(int64(len(p)), w.s.partSize-w.spool.fill)])
		w.size += int64(m)
		n += m
		if err != nil {
			return n, w.fail(fmt.Errorf("s3: spool: %w", err))
		}
		p = p[m:]
	}
	return n, nil
}

// usable says why the writer cannot be used, nil when it can.
func (w *Writer) usable() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return ErrClosed
	}
	if err := w.ctx.Err(); err != nil {
		return w.fail(context.Cause(w.ctx))
	}
	if w.up != nil {
		if err := w.up.failed(); err != nil {
			return w.fail(err)
		}
	}
	return nil
}

// sendSpool hands the spool to the background uploads as the next part,
// starting the multipart upload with the first one, and spools the next
// part into a new file. It waits while maxInFlight parts are in flight.
func (w *Writer) sendSpool() error {
	if w.uploadID == "" {
		if w.opts.Key != "" {
			w.key = w.s.Key(w.opts.Key)
		} else {
			w.key = w.s.Key(stagingDir + randomID())
		}
		in := &s3.CreateMultipartUploadInput{Bucket: &w.s.bucket, Key: &w.key}
		if w.opts.ContentType != "" {
			in.ContentType = &w.opts.ContentType
		}
		out, err := w.s.client.CreateMultipartUpload(w.ctx, in)
		if err != nil {
			return fmt.Errorf("s3: starting the multipart upload: %w", err)
		}
		w.uploadID = *out.UploadId
		w.up = w.s.newPartUploader(w.ctx, w.key, w.uploadID)
	}
	if w.up.count() == maxParts {
		return fmt.Errorf("s3: more than %d parts of %d bytes", maxParts, w.s.partSize)
	}
	if err := w.up.reserve(); err != nil {
		return err
	}
	next, err := w.s.newPartFile()
	if err != nil {
		// No file for the next part (out of descriptors or disk space):
		// this part goes now and its file takes the next one.
		w.up.release()
		if err := w.up.uploadNow(w.spool); err != nil {
			return err
		}
		w.spool.reset()
		return nil
	}
	w.up.start(w.spool)
	w.spool = next
	return nil
}

// Commit makes the object visible under name (relative to the store)
// under policy. On success the writer is closed.
//
// ErrExists (Reject, an object has the name) leaves the writer open when
// it can commit elsewhere without the bytes again: when it was made
// without WriterOptions.Key (the caller tries its next name, then Aborts
// if it gives up). A writer made with a Key is undone then, as on any
// other error.
func (w *Writer) Commit(name string, policy Policy) error {
	if err := w.usable(); err != nil {
		return err
	}
	if isPrivate(name) {
		return fmt.Errorf("s3: %q is in the private folder", name)
	}
	if w.opts.Key != "" && name != w.opts.Key {
		return fmt.Errorf("s3: writer made for %q cannot commit %q", w.opts.Key, name)
	}
	key := w.s.Key(name)
	var err error
	switch {
	case w.staged || (w.uploadID != "" && w.opts.Key == ""):
		err = w.stage()
		if err == nil {
			err = w.copyStaged(key, policy)
		}
	case w.uploadID != "":
		err = w.complete(policy)
	default:
		err = w.put(key, policy)
	}
	if errors.Is(err, ErrExists) && w.opts.Key == "" {
		return err
	}
	if err != nil {
		return w.fail(err)
	}
	w.finish()
	return nil
}

// put stores the spool, the whole object, with one PutObject.
//
// Under Reject, a HeadObject first answers ErrExists without sending the
// bytes (the usual case in a rename loop). The conditional PutObject is
// sent once, not retried, and a failure with no answer is checked: a store
// may answer 412 before reading the body and drop the connection (versitygw
// does), which the client sees as a reset; and a lost answer to a write
// that succeeded must not read as a conflict. So the object found there is
// ours when its ETag is the MD5 of the spool, someone else's otherwise.
func (w *Writer) put(key string, policy Policy) error {
	if policy == Reject {
		if _, err := w.s.client.HeadObject(w.ctx, &s3.HeadObjectInput{Bucket: &w.s.bucket, Key: &key}); err == nil {
			return ErrExists
		} else if !isNotFound(err) {
			return fmt.Errorf("s3: looking for the object: %w", err)
		}
	}
	in := &s3.PutObjectInput{
		Bucket:        &w.s.bucket,
		Key:           &key,
		ContentLength: aws.Int64(w.spool.fill),
		Body:          w.spool.body(),
	}
	if w.opts.ContentType != "" {
		in.ContentType = &w.opts.ContentType
	}
	optFns := []func(*s3.Options){w.spool.payload()}
	if policy == Reject {
		in.IfNoneMatch = aws.String("*")
		optFns = append(optFns, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	}
	_, err := w.s.client.PutObject(w.ctx, in, optFns...)
	if err == nil {
		return nil
	}
	if isPrecondition(err) {
		return ErrExists
	}
	if policy == Reject && statusOf(err) == 0 && w.ctx.Err() == nil {
		if mine, found := w.putLanded(key); found {
			if mine {
				return nil
			}
			return ErrExists
		}
	}
	return fmt.Errorf("s3: storing the object: %w", err)
}

// putLanded looks at key after a PutObject that got no answer: found says
// an object is there, mine that it holds the spool's bytes (its ETag is
// their MD5, as S3 and versitygw make it for a single PutObject).
func (w *Writer) putLanded(key string) (mine, found bool) {
	head, err := w.s.client.HeadObject(w.ctx, &s3.HeadObjectInput{Bucket: &w.s.bucket, Key: &key})
	if err != nil {
		return false, false
	}
	h := md5.New()
	if _, err := io.Copy(h, w.spool.body()); err != nil {
		return false, true
	}
	etag := strings.Trim(aws.ToString(head.ETag), `"`)
	return etag == hex.EncodeToString(h.Sum(nil)) && aws.ToInt64(head.ContentLength) == w.spool.fill, true
}

// uploadLast hands what is left in the spool over as the last part, then
// waits for every part to be sent: the parts to complete.
func (w *Writer) uploadLast() ([]types.CompletedPart, error) {
	if w.spool != nil && w.spool.fill > 0 {
		if w.up.count() == maxParts {
			return nil, fmt.Errorf("s3: more than %d parts of %d bytes", maxParts, w.s.partSize)
		}
		if err := w.up.reserve(); err != nil {
			return nil, err
		}
		w.up.start(w.spool)
		w.spool = nil
	}
	w.removeSpool()
	return w.up.wait()
}

// completeUpload completes the writer's multipart upload from parts under
// policy.
func (w *Writer) completeUpload(parts []types.CompletedPart, policy Policy) error {
	if err := w.s.complete(w.ctx, w.key, w.uploadID, parts, policy); err != nil {
		return err // on ErrExists the upload stays open; fail (or Abort) aborts it
	}
	w.uploadID = ""
	return nil
}

// complete finishes a multipart upload made under the final key.
func (w *Writer) complete(policy Policy) error {
	parts, err := w.uploadLast()
	if err != nil {
		return err
	}
	return w.completeUpload(parts, policy)
}

// stage completes the multipart upload under its staging key, once.
func (w *Writer) stage() error {
	if w.staged {
		return nil
	}
	parts, err := w.uploadLast()
	if err != nil {
		return err
	}
	if err := w.completeUpload(parts, Overwrite); err != nil {
		return err
	}
	w.staged = true
	return nil
}

// copyStaged copies the staging object under key under policy, then
// removes it. On ErrExists the staging object is kept for the next name.
func (w *Writer) copyStaged(key string, policy Policy) error {
	if err := w.s.copyObject(w.ctx, w.key, w.size, key, policy, w.opts.ContentType); err != nil {
		return err
	}
	w.removeStaged()
	return nil
}

// Abort undoes the write: the parts in flight are stopped, the multipart
// upload is aborted, the staging object and the spool files removed. It does nothing after Commit succeeded or
// after a failure (which undid the write already) and is safe to defer.
func (w *Writer) Abort() error {
	if w.closed {
		return nil
	}
	return w.undo()
}

// fail undoes the write and keeps err as the writer's answer from now on.
func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	w.undo()
	return w.err
}

// undo removes all the writer made and closes it; it returns the first
// cleanup error.
func (w *Writer) undo() error {
	var first error
	late := false
	if w.up != nil {
		// Before the abort, so that no part lands after it.
		late = w.up.drain(drainWait)
	}
	ctx, cancel := cleanupContext(w.ctx)
	defer cancel()
	if w.uploadID != "" {
		_, err := w.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: &w.s.bucket, Key: &w.key, UploadId: &w.uploadID,
		})
		if err != nil && !isNotFound(err) {
			first = fmt.Errorf("s3: aborting the multipart upload: %w", err)
		} else {
			if late {
				go w.s.abortAgain(w.key, w.uploadID)
			}
			w.uploadID = ""
		}
	}
	if w.staged {
		if err := w.removeStagedCtx(ctx); err != nil && first == nil {
			first = err
		}
	}
	w.removeSpool()
	w.closed = true
	return first
}

// finish closes a committed writer.
func (w *Writer) finish() {
	if w.up != nil {
		w.up.stop() // none is in flight: this releases its context
	}
	w.removeSpool()
	w.closed = true
}

func (w *Writer) removeStaged() {
	ctx, cancel := cleanupContext(w.ctx)
	defer cancel()
	// A staging object left by a failure here is the janitor's.
	w.removeStagedCtx(ctx)
}

func (w *Writer) removeStagedCtx(ctx context.Context) error {
	_, err := w.s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &w.s.bucket, Key: &w.key})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("s3: removing the staging object: %w", err)
	}
	w.staged = false
	return nil
}

// removeSpool removes the spool file.
func (w *Writer) removeSpool() {
	if w.spool == nil {
		return
	}
	w.spool.remove()
	w.spool = nil
}

// randomID is 16 random bytes in hex.
func randomID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// abortAgain repeats the abort of a multipart upload a little later: a
// part cancelled mid-flight may have been stored after the first one.
func (s *Store) abortAgain(key, uploadID string) {
	time.Sleep(abortAgainAfter)
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, _ = s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: &uploadID})
}
