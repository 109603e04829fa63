package s3store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
)

// maxInFlight is the number of parts of one multipart upload that upload
// at once while the next part spools. With the part being filled, a writer
// holds at most maxInFlight+1 spool files (of one part each, on disk).
const maxInFlight = 2

// errStopped is the cause given to the part uploads that stop undone.
var errStopped = errors.New("s3: the upload was stopped")

// partFile is a local temp file holding the bytes of one part. When the
// store signs payloads (an endpoint on plain HTTP, see Store.signPayload),
// it keeps the SHA-256 of those bytes too, computed as they are written,
// so that signing the part's request does not read the file once more.
type partFile struct {
	f    *os.File
	fill int64
	sum  hash.Hash // nil when payloads are not signed
}

// newPartFile creates an empty part file in the store's temp folder.
func (s *Store) newPartFile() (*partFile, error) {
	f, err := os.CreateTemp(s.tempDir, "s3part-*")
	if err != nil {
		return nil, fmt.Errorf("s3: spool file: %w", err)
	}
	p := &partFile{f: f}
	if s.signPayload {
		p.sum = sha256.New()
	}
	return p, nil
}

// write appends b (the part must have room for it).
func (p *partFile) write(b []byte) (int, error) {
	n, err := p.f.WriteAt(b, p.fill)
	if p.sum != nil {
		p.sum.Write(b[:n])
	}
	p.fill += int64(n)
	return n, err
}

// body reads the part from its start.
func (p *partFile) body() *io.SectionReader { return io.NewSectionReader(p.f, 0, p.fill) }

// payload is the request option that signs the part's SHA-256 as its
// payload hash, so that the SDK does not read the body to compute it; it
// does nothing when payloads are not signed (the SDK sends
// UNSIGNED-PAYLOAD over TLS).
func (p *partFile) payload() func(*s3.Options) {
	if p.sum == nil {
		return func(*s3.Options) {}
	}
	sum := hex.EncodeToString(p.sum.Sum(nil))
	return s3.WithAPIOptions(func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("PresetPayloadHash",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				return next.HandleInitialize(v4.SetPayloadHash(ctx, sum), in)
			}), middleware.After)
	})
}

// reset empties the part for the next bytes.
func (p *partFile) reset() {
	p.fill = 0
	if p.sum != nil {
		p.sum.Reset()
	}
}

// remove closes and removes the file.
func (p *partFile) remove() {
	p.f.Close()
	os.Remove(p.f.Name())
}

// partUploader uploads the parts of one multipart upload, each from its
// part file, in the background: at most maxInFlight at once, each in a
// goroutine that lives while its part uploads (an idle uploader holds
// none). The first failure stops the parts in flight and is kept; the
// caller sees it at its next call. Not safe for concurrent use (the
// uploads themselves run concurrently).
type partUploader struct {
	s        *Store
	key      string
	uploadID string
	ctx      context.Context
	cancel   context.CancelCauseFunc
	slots    chan struct{} // one token per part in flight
	wg       sync.WaitGroup
	first    int32   // the number of the part before the first one
	started  int32   // parts handed over
	sizes    []int64 // of the parts handed over, in order

	mu    sync.Mutex
	parts []types.CompletedPart // in order; nil ETag while in flight
	err   error                 // the first failure
}

// newPartUploader uploads parts into the multipart upload uploadID of key;
// ctx bounds every part.
func (s *Store) newPartUploader(ctx context.Context, key, uploadID string) *partUploader {
	ctx, cancel := context.WithCancelCause(ctx)
	return &partUploader{s: s, key: key, uploadID: uploadID, ctx: ctx, cancel: cancel, slots: make(chan struct{}, maxInFlight)}
}

// count is the number of the last part handed over (of all the parts of
// the multipart upload, those before first included).
func (u *partUploader) count() int { return int(u.first + u.started) }

// failed is the first failure of a part, nil when none failed.
func (u *partUploader) failed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// reserve waits until a part may start (fewer than maxInFlight in flight).
// Each reserve is followed by one start or release.
func (u *partUploader) reserve() error {
	select {
	case u.slots <- struct{}{}:
		return u.failed()
	case <-u.ctx.Done():
		if err := u.failed(); err != nil {
			return err
		}
		return context.Cause(u.ctx)
	}
}

// release gives back a reservation that was not used.
func (u *partUploader) release() { <-u.slots }

// start uploads p as the next part in the background, in a reservation;
// the part file is the uploader's from now on (removed once sent).
func (u *partUploader) start(p *partFile) {
	i, num := u.next(p)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() { <-u.slots }()
		defer p.remove()
		u.upload(i, num, p)
	}()
}

// uploadNow uploads p as the next part and returns when it is sent; p
// stays the caller's. It is the way when no file can be had for a
// background part (out of descriptors or disk).
func (u *partUploader) uploadNow(p *partFile) error {
	i, num := u.next(p)
	u.upload(i, num, p)
	return u.failed()
}

// next numbers a new part of p's size: its index among the parts handed
// over and its part number.
func (u *partUploader) next(p *partFile) (int, int32) {
	u.started++
	num := u.first + u.started
	u.sizes = append(u.sizes, p.fill)
	u.mu.Lock()
	u.parts = append(u.parts, types.CompletedPart{PartNumber: aws.Int32(num)})
	u.mu.Unlock()
	return int(u.started - 1), num
}

// upload sends p as part num, the i-th handed over, and records its ETag
// or the failure.
func (u *partUploader) upload(i int, num int32, p *partFile) {
	out, err := u.s.client.UploadPart(u.ctx, &s3.UploadPartInput{
		Bucket:        &u.s.bucket,
		Key:           &u.key,
		UploadId:      &u.uploadID,
		PartNumber:    &num,
		ContentLength: aws.Int64(p.fill),
		Body:          p.body(),
	}, p.payload())
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		if u.err == nil {
			u.err = fmt.Errorf("s3: uploading part %d: %w", num, err)
			u.cancel(u.err)
		}
		return
	}
	u.parts[i].ETag = out.ETag
}

// wait waits for the parts in flight and returns all the parts, in order,
// or the first failure.
func (u *partUploader) wait() ([]types.CompletedPart, error) {
	u.wg.Wait()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return nil, u.err
	}
	if err := context.Cause(u.ctx); err != nil {
		return nil, err
	}
	return u.parts, nil
}

// drain lets the parts in flight end on their own for at most wait, then
// cancels what is left, and waits until every part is gone (its file
// removed). A part whose request is cancelled may still be stored after
// the client gave up on it (the store had its body), and on some stores
// (versitygw) such a part, landing after AbortMultipartUpload, opens the
// multipart upload again: so an abort follows drain, and it reports
// whether any part was cancelled mid-flight (the abort should then be
// repeated a little later).
func (u *partUploader) drain(wait time.Duration) (cancelled bool) {
	done := make(chan struct{})
	go func() {
		u.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-u.ctx.Done(): // a part failed, or the write's context ended
	}
	select {
	case <-done:
		cancelled = u.ctx.Err() != nil && u.started > 0
	default:
		cancelled = true
	}
	u.cancel(errStopped)
	<-done
	return cancelled
}

// stop cancels the parts in flight and waits until they are gone (their
// files removed). The multipart upload is the caller's to abort.
func (u *partUploader) stop() {
	u.cancel(errStopped)
	u.wg.Wait()
}
