package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
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
