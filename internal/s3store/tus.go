package s3store

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// The tus layout, in the private folder, for an upload id:
//
//	.uploads/tus/<id>.info          the state (JSON), saved with If-Match on
//	                                its ETag: the commit point of each append
//	.uploads/tus/<id>               the S3 multipart upload holding the whole
//	                                parts (at least 5 MiB each but the last)
//	.uploads/tus/<id>.tail.<rand>   the bytes past the last whole part; a
//	                                new key at each append, named in the state
//
// The state names the parts it committed (number, ETag, size) and the
// tail, beside the handler's Info (with the sha256 state of the bytes up
// to the offset, so the whole-file hash carries across appends and
// instances). An append writes its data where it cannot clobber committed
// data (part numbers above the committed ones, a fresh tail key), then
// saves the state with If-Match: a writer whose state is stale (another
// saved since) fails there and its data is never counted. An append
// checks the parts and the tail against the state first (ListParts, the
// tail's size), and an upload whose parts differ from its state (a part
// number overwritten by a stale writer) is refused rather than mixed.
// Files (tusfiles.go) implements the handlers' tus interfaces on it.
const tusDir = Private + "/tus/"

// ErrStale is returned when the upload's state changed since it was loaded
// (another writer appended): nothing of this append counts.
var ErrStale = tus.ErrStale

// ErrInconsistent is returned by an append when the parts in the store are
// not the ones the state committed.
var ErrInconsistent = fmt.Errorf("%w: its parts differ from its state", tus.ErrLost)

// TusInfo is the saved state of a tus upload.
type TusInfo struct {
	ID      string    `json:"id"`
	Size    int64     `json:"size"` // -1 while deferred
	Created time.Time `json:"created"`
	// Name, when set, is the name (relative to the store) the upload is
	// published under or not at all: its multipart upload is made under
	// it and completed in place. Otherwise the multipart upload is under
	// the upload's private key, completed there and copied under its name.
	Name string `json:"name,omitempty"`
	// UploadID names the S3 multipart upload ("" once completed).
	UploadID string    `json:"upload_id,omitempty"`
	Parts    []tusPart `json:"parts,omitempty"`
	// Tail is the key of the object holding the bytes past the parts.
	Tail     string `json:"tail,omitempty"`
	TailSize int64  `json:"tail_size,omitempty"`
	// Completed says the parts are completed into the upload's private
	// object, which waits to be copied under its name.
	Completed bool `json:"completed,omitempty"`
	// Upload is the handler's state of the upload (Files' tus.States), kept
	// in the same object as the layout so that one conditional write
	// commits both; nil between Create and the first save.
	Upload *tus.Info `json:"upload,omitempty"`
	// Published says the bytes were copied under their name and the
	// upload's data removed.
	Published bool `json:"published,omitempty"`
}

type tusPart struct {
	Number int32  `json:"n"`
	ETag   string `json:"etag"`
	Size   int64  `json:"size"`
}

// Offset is the number of bytes the upload holds.
func (i *TusInfo) Offset() int64 {
	if i.Completed {
		return i.Size
	}
	n := i.TailSize
	for _, p := range i.Parts {
		n += p.Size
	}
	return n
}

// TusUpload is a loaded upload: its state and the ETag of the state object
// that a save must match.
type TusUpload struct {
	Info TusInfo
	etag string
}

func (s *Store) tusKey(id, suffix string) string { return s.Key(tusDir + id + suffix) }

// tusUploadKey is the key of an upload's multipart upload: its name, or
// its private key.
func (s *Store) tusUploadKey(i *TusInfo) string {
	if i.Name != "" {
		return s.Key(i.Name)
	}
	return s.tusKey(i.ID, "")
}

// saveTus writes the state: a new one only when none exists, else only
// over the version loaded (If-Match), and keeps the new ETag.
func (s *Store) saveTus(ctx context.Context, u *TusUpload, create bool) error {
	body, err := json.Marshal(&u.Info)
	if err != nil {
		return err
	}
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           aws.String(s.tusKey(u.Info.ID, ".info")),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String("application/json"),
	}
	if create {
		in.IfNoneMatch = aws.String("*")
	} else {
		in.IfMatch = &u.etag
	}
	// Sent once: a retry after a lost answer would fail its own condition.
	out, err := s.client.PutObject(ctx, in, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	if err == nil {
		u.etag = aws.ToString(out.ETag)
		return nil
	}
	if statusOf(err) == 0 && ctx.Err() == nil {
		// No answer: the state there is ours when its ETag is our body's MD5
		// (the body is unique: it names a fresh tail and the hash state).
		sum := md5.Sum(body)
		head, herr := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: in.Key})
		if herr == nil && strings.Trim(aws.ToString(head.ETag), `"`) == hex.EncodeToString(sum[:]) {
			u.etag = aws.ToString(head.ETag)
			return nil
		}
	}
	if isPrecondition(err) || (!create && isNotFound(err)) {
		return ErrStale // saved by another meanwhile, or removed
	}
	return fmt.Errorf("s3: saving the upload's state: %w", err)
}

// getTus reads an upload's state and its ETag, without looking at its
// data.
func (s *Store) getTus(ctx context.Context, id string) (*TusUpload, error) {
	if id == "" || strings.ContainsAny(id, "/.") {
		return nil, ErrNotFound
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.tusKey(id, ".info"))})
	if err != nil {
		if isNotFound(err) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("s3: reading the upload's state: %w", err)
	}
	defer out.Body.Close()
	u := &TusUpload{etag: aws.ToString(out.ETag)}
	if err := json.NewDecoder(io.LimitReader(out.Body, maxTusState)).Decode(&u.Info); err != nil {
		return nil, fmt.Errorf("s3: the upload's state: %w", err)
	}
	return u, nil
}

// maxTusState bounds the state object read back: 10,000 parts and 64 KiB
// of metadata fit.
const maxTusState = 4 << 20

// verifyTus checks an upload's state against the store: its committed
// parts are listed with the ETags and sizes it names, and its tail has its
// size. ErrInconsistent otherwise.
func (s *Store) verifyTus(ctx context.Context, u *TusUpload) error {
	if len(u.Info.Parts) > 0 && !u.Info.Completed {
		listed := map[int32]types.Part{}
		p := s3.NewListPartsPaginator(s.client, &s3.ListPartsInput{
			Bucket: &s.bucket, Key: aws.String(s.tusUploadKey(&u.Info)), UploadId: &u.Info.UploadID,
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				if isNotFound(err) {
					return fmt.Errorf("%w: its multipart upload is gone", ErrInconsistent)
				}
				return fmt.Errorf("s3: listing the upload's parts: %w", err)
			}
			for _, part := range page.Parts {
				listed[aws.ToInt32(part.PartNumber)] = part
			}
		}
		for _, want := range u.Info.Parts {
			got, ok := listed[want.Number]
			if !ok || aws.ToString(got.ETag) != want.ETag || aws.ToInt64(got.Size) != want.Size {
				return fmt.Errorf("%w: part %d", ErrInconsistent, want.Number)
			}
		}
	}
	if u.Info.Tail != "" {
		head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &u.Info.Tail})
		if err != nil || aws.ToInt64(head.ContentLength) != u.Info.TailSize {
			return fmt.Errorf("%w: the tail", ErrInconsistent)
		}
	}
	return nil
}

// ErrNotFound is returned for an upload id with no state.
var ErrNotFound = errors.New("no such upload")

// deleteKey removes a key, ignoring failure (what is left is swept with
// its upload).
func (s *Store) deleteKey(ctx context.Context, key string) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
}

// completeTus completes a whole upload's parts (its tail uploaded as the
// last part) into its private object, once: the state remembers it. An
// upload made under its name is not (it is completed there by putTus).
func (s *Store) completeTus(ctx context.Context, u *TusUpload) error {
	if u.Info.Completed || len(u.Info.Parts) == 0 {
		return nil // done, or all in the tail (a plain object)
	}
	if u.Info.Name != "" {
		return fmt.Errorf("s3: upload %s is completed under its name only", u.Info.ID)
	}
	if err := s.completeParts(ctx, &u.Info, Overwrite); err != nil {
		return err
	}
	info := u.Info
	info.Tail, info.TailSize, info.UploadID, info.Completed = "", 0, "", true
	next := &TusUpload{Info: info, etag: u.etag}
	if err := s.saveTus(ctx, next, false); err != nil {
		return err
	}
	if t := u.Info.Tail; t != "" {
		s.deleteKey(ctx, t)
	}
	*u = *next
	return nil
}

// completeParts completes a whole upload's multipart upload, where it was
// made, under policy: the parts its state lists (their ETags: bytes that a
// stale writer put under one of their numbers fail it) and its tail,
// uploaded as the last part. The tail object stays (the state names it).
// Under Reject an object of the name makes it ErrExists, and the multipart
// upload stays open for another try or the upload's removal.
func (s *Store) completeParts(ctx context.Context, info *TusInfo, policy Policy) error {
	key := s.tusUploadKey(info)
	parts := make([]types.CompletedPart, 0, len(info.Parts)+1)
	for _, p := range info.Parts {
		parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(p.Number), ETag: aws.String(p.ETag)})
	}
	if info.Tail != "" {
		spool, err := os.CreateTemp(s.tempDir, "s3tus-*")
		if err != nil {
			return fmt.Errorf("s3: spool file: %w", err)
		}
		defer func() {
			spool.Close()
			os.Remove(spool.Name())
		}()
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &info.Tail})
		if err != nil {
			return fmt.Errorf("s3: reading the tail: %w", err)
		}
		n, err := io.Copy(spool, out.Body)
		out.Body.Close()
		if err != nil || n != info.TailSize {
			return fmt.Errorf("s3: reading the tail: %d bytes, %v", n, err)
		}
		num := info.Parts[len(info.Parts)-1].Number + 1
		res, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &s.bucket, Key: &key, UploadId: &info.UploadID,
			PartNumber: &num, ContentLength: aws.Int64(n), Body: io.NewSectionReader(spool, 0, n),
		})
		if err != nil {
			return fmt.Errorf("s3: uploading the last part: %w", err)
		}
		parts = append(parts, types.CompletedPart{PartNumber: &num, ETag: res.ETag})
	}
	return s.complete(ctx, key, info.UploadID, parts, policy)
}

// tusObject is the key of the plain object that holds a whole upload's
// bytes after completeTus: its private object, or its tail ("" when
// empty).
func (s *Store) tusObject(u *TusUpload) string {
	if u.Info.Completed {
		return s.tusKey(u.Info.ID, "")
	}
	return u.Info.Tail
}
