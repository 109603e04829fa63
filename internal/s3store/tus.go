package s3store

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
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
// The state names the parts it committed (number, ETag, size), the tail,
// and the sha256 state of the bytes up to the offset, so the whole-file
// hash carries across appends and instances. An append writes its data
// where it cannot clobber committed data (part numbers above the committed
// ones, a fresh tail key), then saves the state with If-Match: a writer
// whose state is stale (another saved since) fails there and its data is
// never counted. The offset is recomputed from ListParts and the tail's
// size on Load, and an upload whose parts differ from its state (a part
// number overwritten by a stale writer) is refused rather than mixed.
const tusDir = Private + "/tus/"

// ErrStale is returned when the upload's state changed since it was loaded
// (another writer appended): nothing of this append counts.
var ErrStale = tus.ErrStale

// ErrInconsistent is returned by LoadTus when the parts in the store are
// not the ones the state committed.
var ErrInconsistent = fmt.Errorf("%w: its parts differ from its state", tus.ErrLost)

// TusInfo is the saved state of a tus upload.
type TusInfo struct {
	ID       string            `json:"id"`
	Size     int64             `json:"size"` // -1 while deferred
	MetaData map[string]string `json:"metadata,omitempty"`
	Created  time.Time         `json:"created"`
	// UploadID names the S3 multipart upload ("" once completed).
	UploadID string    `json:"upload_id,omitempty"`
	Parts    []tusPart `json:"parts,omitempty"`
	// Tail is the key of the object holding the bytes past the parts.
	Tail     string `json:"tail,omitempty"`
	TailSize int64  `json:"tail_size,omitempty"`
	// SHA256 is the marshalled sha256 state of the bytes up to the offset.
	SHA256 []byte `json:"sha256_state"`
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
// that an append must match.
type TusUpload struct {
	Info TusInfo
	etag string
}

// Sum is the sha256 of the bytes up to the offset.
func (u *TusUpload) Sum() ([]byte, error) {
	h, err := u.hash()
	if err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func (u *TusUpload) hash() (hash.Hash, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(u.Info.SHA256); err != nil {
		return nil, fmt.Errorf("s3: the upload's hash state: %w", err)
	}
	return h, nil
}

func (s *Store) tusKey(id, suffix string) string { return s.Key(tusDir + id + suffix) }

// CreateTus saves the state of a new, empty upload (size -1 for a deferred
// length).
func (s *Store) CreateTus(ctx context.Context, size int64, meta map[string]string) (*TusUpload, error) {
	state, err := sha256.New().(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	u := &TusUpload{Info: TusInfo{ID: randomID(), Size: size, MetaData: meta, Created: time.Now().UTC(), SHA256: state}}
	out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: &s.bucket, Key: aws.String(s.tusKey(u.Info.ID, "")),
	})
	if err != nil {
		return nil, fmt.Errorf("s3: starting the multipart upload: %w", err)
	}
	u.Info.UploadID = aws.ToString(out.UploadId)
	if err := s.saveTus(ctx, u, true); err != nil {
		s.TerminateTus(ctx, u)
		return nil, err
	}
	return u, nil
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

// LoadTus reads an upload's state and checks it against the store: the
// committed parts are listed (ListParts) with their ETags and sizes and
// the tail has its size, so the offset is the store's, not only the
// state's. fs.ErrNotExist-like errors come back as ErrNotFound.
func (s *Store) LoadTus(ctx context.Context, id string) (*TusUpload, error) {
	u, err := s.getTus(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.verifyTus(ctx, u); err != nil {
		return nil, err
	}
	return u, nil
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
	id := u.Info.ID
	if len(u.Info.Parts) > 0 && !u.Info.Completed {
		listed := map[int32]types.Part{}
		p := s3.NewListPartsPaginator(s.client, &s3.ListPartsInput{
			Bucket: &s.bucket, Key: aws.String(s.tusKey(id, "")), UploadId: &u.Info.UploadID,
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

// TerminateTus removes everything of an upload: its multipart upload,
// every object of its id (tails that a failed append left included), its
// state last.
func (s *Store) TerminateTus(ctx context.Context, u *TusUpload) error {
	if u.Info.UploadID != "" {
		_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: &s.bucket, Key: aws.String(s.tusKey(u.Info.ID, "")), UploadId: &u.Info.UploadID,
		})
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("s3: aborting the upload: %w", err)
		}
	}
	// Ids are of one length: no other upload's key starts with this one.
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.tusKey(u.Info.ID, ""))})
	info := s.tusKey(u.Info.ID, ".info")
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3: listing the upload's objects: %w", err)
		}
		for _, o := range page.Contents {
			if aws.ToString(o.Key) == info {
				continue
			}
			if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: o.Key}); err != nil && !isNotFound(err) {
				return fmt.Errorf("s3: removing the upload: %w", err)
			}
		}
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &info}); err != nil && !isNotFound(err) {
		return fmt.Errorf("s3: removing the upload's state: %w", err)
	}
	return nil
}

// SweepTus removes the tus uploads whose state was last saved (created or
// appended to) before now-age, and aborts the multipart uploads of the tus
// folder started before then that no state names (a crash between the two
// steps of CreateTus). It returns how many uploads it removed.
func (s *Store) SweepTus(ctx context.Context, age time.Duration, now time.Time) (int, error) {
	cutoff := now.Add(-age)
	dir := s.Key(tusDir)
	removed := 0
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &dir})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return removed, fmt.Errorf("s3: listing tus uploads: %w", err)
		}
		for _, o := range page.Contents {
			id, ok := strings.CutSuffix(strings.TrimPrefix(aws.ToString(o.Key), dir), ".info")
			if !ok || o.LastModified == nil || !o.LastModified.Before(cutoff) {
				continue
			}
			u, err := s.LoadTus(ctx, id)
			if err != nil && !errors.Is(err, ErrInconsistent) {
				if errors.Is(err, ErrNotFound) {
					continue
				}
				return removed, err
			}
			if u == nil {
				u = &TusUpload{Info: TusInfo{ID: id}}
			}
			if err := s.TerminateTus(ctx, u); err != nil {
				return removed, err
			}
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
			if up.Initiated == nil || !up.Initiated.Before(cutoff) {
				continue
			}
			id := strings.TrimPrefix(aws.ToString(up.Key), dir)
			if _, err := s.LoadTus(ctx, id); !errors.Is(err, ErrNotFound) {
				continue // a live upload (or one to look at): not an orphan
			}
			s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: up.Key, UploadId: up.UploadId})
		}
		if !aws.ToBool(page.IsTruncated) {
			break
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
	return removed, nil
}

// DeclareTusLength sets the size of an upload created with a deferred
// length (tus creation-defer-length), once, to no less than its offset.
func (s *Store) DeclareTusLength(ctx context.Context, u *TusUpload, size int64) error {
	if u.Info.Size >= 0 {
		return fmt.Errorf("s3: the upload's length is set already")
	}
	if size < u.Info.Offset() {
		return fmt.Errorf("s3: length %d is below the upload's offset %d", size, u.Info.Offset())
	}
	next := &TusUpload{Info: u.Info, etag: u.etag}
	next.Info.Size = size
	if err := s.saveTus(ctx, next, false); err != nil {
		return err
	}
	*u = *next
	return nil
}
