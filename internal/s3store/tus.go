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
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
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
var ErrStale = errors.New("the upload changed meanwhile")

// ErrInconsistent is returned by LoadTus when the parts in the store are
// not the ones the state committed.
var ErrInconsistent = errors.New("the upload's parts differ from its state")

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
	if isPrecondition(err) {
		return ErrStale
	}
	return fmt.Errorf("s3: saving the upload's state: %w", err)
}

// LoadTus reads an upload's state and checks it against the store: the
// committed parts are listed (ListParts) with their ETags and sizes and
// the tail has its size, so the offset is the store's, not only the
// state's. fs.ErrNotExist-like errors come back as ErrNotFound.
func (s *Store) LoadTus(ctx context.Context, id string) (*TusUpload, error) {
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
	if err := json.NewDecoder(io.LimitReader(out.Body, 1<<20)).Decode(&u.Info); err != nil {
		return nil, fmt.Errorf("s3: the upload's state: %w", err)
	}
	if len(u.Info.Parts) > 0 {
		listed := map[int32]types.Part{}
		p := s3.NewListPartsPaginator(s.client, &s3.ListPartsInput{
			Bucket: &s.bucket, Key: aws.String(s.tusKey(id, "")), UploadId: &u.Info.UploadID,
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("s3: listing the upload's parts: %w", err)
			}
			for _, part := range page.Parts {
				listed[aws.ToInt32(part.PartNumber)] = part
			}
		}
		for _, want := range u.Info.Parts {
			got, ok := listed[want.Number]
			if !ok || aws.ToString(got.ETag) != want.ETag || aws.ToInt64(got.Size) != want.Size {
				return nil, fmt.Errorf("%w: part %d", ErrInconsistent, want.Number)
			}
		}
	}
	if u.Info.Tail != "" {
		head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &u.Info.Tail})
		if err != nil || aws.ToInt64(head.ContentLength) != u.Info.TailSize {
			return nil, fmt.Errorf("%w: the tail", ErrInconsistent)
		}
	}
	return u, nil
}

// ErrNotFound is returned for an upload id with no state.
var ErrNotFound = errors.New("no such upload")

// AppendTus appends r at the upload's offset (at most up to its size, when
// known): the tail and the new bytes spool into a local file of one part,
// each whole part is uploaded, what is left becomes the new tail, and the
// state (with the hash of all bytes so far) is saved with If-Match. It
// returns how many bytes of r it kept; when r fails midway, the bytes read
// until then are kept (tus resumes from there) and r's error is returned
// beside. ErrStale means another writer saved in between: nothing counts.
func (s *Store) AppendTus(ctx context.Context, u *TusUpload, r io.Reader) (int64, error) {
	if u.Info.Completed {
		return 0, fmt.Errorf("s3: the upload is complete")
	}
	info := u.Info // the new state, committed only by the save
	info.Parts = append([]tusPart(nil), u.Info.Parts...)
	h, err := u.hash()
	if err != nil {
		return 0, err
	}
	if info.Size >= 0 {
		r = io.LimitReader(r, info.Size-info.Offset())
	}
	spool, err := os.CreateTemp(s.tempDir, "s3tus-*")
	if err != nil {
		return 0, fmt.Errorf("s3: spool file: %w", err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	fill := int64(0)
	if info.Tail != "" {
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &info.Tail})
		if err != nil {
			return 0, fmt.Errorf("s3: reading the tail: %w", err)
		}
		fill, err = io.Copy(spool, out.Body)
		out.Body.Close()
		if err != nil || fill != info.TailSize {
			return 0, fmt.Errorf("s3: reading the tail: %d bytes, %v", fill, err)
		}
	}
	next := int32(1)
	if n := len(info.Parts); n > 0 {
		next = info.Parts[n-1].Number + 1
	}
	flush := func() error {
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &s.bucket, Key: aws.String(s.tusKey(info.ID, "")), UploadId: &info.UploadID,
			PartNumber: aws.Int32(next), ContentLength: aws.Int64(fill), Body: io.NewSectionReader(spool, 0, fill),
		})
		if err != nil {
			return fmt.Errorf("s3: uploading part %d: %w", next, err)
		}
		info.Parts = append(info.Parts, tusPart{Number: next, ETag: aws.ToString(out.ETag), Size: fill})
		next++
		fill = 0
		return nil
	}
	var kept int64
	var readErr error
	buf := make([]byte, 32<<10)
	for {
		if fill >= s.partSize {
			if err := flush(); err != nil {
				return 0, err
			}
		}
		n, err := r.Read(buf[:min(int64(len(buf)), s.partSize-fill)])
		if n > 0 {
			if _, werr := spool.WriteAt(buf[:n], fill); werr != nil {
				return 0, fmt.Errorf("s3: spool: %w", werr)
			}
			h.Write(buf[:n])
			fill += int64(n)
			kept += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	oldTail := info.Tail
	info.Tail, info.TailSize = "", 0
	if fill > 0 {
		info.Tail, info.TailSize = s.tusKey(info.ID, ".tail."+randomID()), fill
		if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &s.bucket, Key: &info.Tail, ContentLength: aws.Int64(fill), Body: io.NewSectionReader(spool, 0, fill),
		}); err != nil {
			return 0, fmt.Errorf("s3: storing the tail: %w", err)
		}
	}
	if info.SHA256, err = h.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
		return 0, err
	}
	next2 := &TusUpload{Info: info, etag: u.etag}
	if err := s.saveTus(ctx, next2, false); err != nil {
		if info.Tail != "" {
			s.deleteKey(ctx, info.Tail)
		}
		return 0, err
	}
	*u = *next2
	if oldTail != "" && oldTail != info.Tail {
		s.deleteKey(ctx, oldTail)
	}
	return kept, readErr
}

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

// FinishTus publishes a complete upload (offset = size) under name
// (relative to the store) under policy, then removes the upload. The
// parts are completed into the upload's private object (once; the state
// remembers it) and copied server-side under name, conditionally under
// Reject; on ErrExists the upload stays, and FinishTus can be called again
// with the next name.
func (s *Store) FinishTus(ctx context.Context, u *TusUpload, name string, policy Policy) error {
	if isPrivate(name) {
		return fmt.Errorf("s3: %q is in the private folder", name)
	}
	if u.Info.Size < 0 || u.Info.Offset() != u.Info.Size {
		return fmt.Errorf("s3: the upload holds %d of %d bytes", u.Info.Offset(), u.Info.Size)
	}
	if len(u.Info.Parts) == 0 && !u.Info.Completed {
		// At most one part: the tail (or nothing) goes in one PutObject.
		w, err := s.NewWriter(ctx, WriterOptions{})
		if err != nil {
			return err
		}
		defer w.Abort()
		if u.Info.Tail != "" {
			out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &u.Info.Tail})
			if err != nil {
				return fmt.Errorf("s3: reading the tail: %w", err)
			}
			_, err = io.Copy(w, out.Body)
			out.Body.Close()
			if err != nil {
				return err
			}
		}
		if err := w.Commit(name, policy); err != nil {
			return err
		}
		return s.TerminateTus(ctx, u)
	}
	if err := s.completeTus(ctx, u); err != nil {
		return err
	}
	if err := s.copyObject(ctx, s.tusKey(u.Info.ID, ""), u.Info.Size, s.Key(name), policy, ""); err != nil {
		return err
	}
	return s.TerminateTus(ctx, u)
}

// completeTus completes a whole upload's parts (its tail uploaded as the
// last part) into its private object, once: the state remembers it.
func (s *Store) completeTus(ctx context.Context, u *TusUpload) error {
	if u.Info.Completed || len(u.Info.Parts) == 0 {
		return nil // done, or all in the tail (a plain object)
	}
	info := u.Info
	info.Parts = append([]tusPart(nil), u.Info.Parts...)
	if info.Tail != "" {
		// The tail becomes the last part.
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
			Bucket: &s.bucket, Key: aws.String(s.tusKey(info.ID, "")), UploadId: &info.UploadID,
			PartNumber: &num, ContentLength: aws.Int64(n), Body: io.NewSectionReader(spool, 0, n),
		})
		if err != nil {
			return fmt.Errorf("s3: uploading the last part: %w", err)
		}
		info.Parts = append(info.Parts, tusPart{Number: num, ETag: aws.ToString(res.ETag), Size: n})
	}
	parts := make([]types.CompletedPart, len(info.Parts))
	for i, p := range info.Parts {
		parts[i] = types.CompletedPart{PartNumber: aws.Int32(p.Number), ETag: aws.String(p.ETag)}
	}
	if _, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: aws.String(s.tusKey(info.ID, "")), UploadId: &info.UploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}); err != nil {
		return fmt.Errorf("s3: completing the upload: %w", err)
	}
	oldTail := info.Tail
	info.Tail, info.TailSize, info.UploadID, info.Completed = "", 0, "", true
	next := &TusUpload{Info: info, etag: u.etag}
	if err := s.saveTus(ctx, next, false); err != nil {
		return err
	}
	*u = *next
	if oldTail != "" {
		s.deleteKey(ctx, oldTail)
	}
	return nil
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

// ConcatTus makes a new upload whose bytes are the partial uploads' one
// after the other (tus concatenation). Each partial must be whole; it is
// completed into its private object and kept. When every partial but the
// last holds at least MinPartSize, the bytes are copied server-side
// (UploadPartCopy) into the new upload's parts; otherwise (S3 refuses
// smaller parts) they stream through AppendTus. Either way the partials
// are read once for the whole-file sha256.
func (s *Store) ConcatTus(ctx context.Context, partials []*TusUpload, meta map[string]string) (*TusUpload, error) {
	var total int64
	copyable := true
	for i, p := range partials {
		if p.Info.Size < 0 || p.Info.Offset() != p.Info.Size {
			return nil, fmt.Errorf("s3: partial upload %s is not complete", p.Info.ID)
		}
		if err := s.completeTus(ctx, p); err != nil {
			return nil, err
		}
		if i < len(partials)-1 && p.Info.Size < MinPartSize {
			copyable = false
		}
		total += p.Info.Size
	}
	u, err := s.CreateTus(ctx, total, meta)
	if err != nil {
		return nil, err
	}
	readers := make([]io.Reader, 0, len(partials))
	var bodies []io.Closer
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	for _, p := range partials {
		key := s.tusObject(p)
		if key == "" {
			continue
		}
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
		if err != nil {
			s.TerminateTus(ctx, u)
			return nil, fmt.Errorf("s3: reading a partial upload: %w", err)
		}
		bodies = append(bodies, out.Body)
		readers = append(readers, out.Body)
	}
	all := io.MultiReader(readers...)
	if !copyable || total == 0 {
		n, err := s.AppendTus(ctx, u, all)
		if err == nil && n != total {
			err = fmt.Errorf("s3: the partial uploads gave %d of %d bytes", n, total)
		}
		if err != nil {
			s.TerminateTus(ctx, u)
			return nil, err
		}
		return u, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, all); err != nil {
		s.TerminateTus(ctx, u)
		return nil, fmt.Errorf("s3: reading the partial uploads: %w", err)
	}
	info := u.Info
	for _, p := range partials {
		if p.Info.Size == 0 {
			continue
		}
		source := url.PathEscape(s.bucket) + "/" + escapeKey(s.tusObject(p))
		for _, r := range copyRanges(p.Info.Size) {
			num := int32(len(info.Parts) + 1)
			res, err := s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
				Bucket: &s.bucket, Key: aws.String(s.tusKey(info.ID, "")), UploadId: &info.UploadID,
				PartNumber: &num, CopySource: &source,
				CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", r[0], r[1]-1)),
			})
			if err != nil {
				s.TerminateTus(ctx, u)
				return nil, fmt.Errorf("s3: copying a partial upload: %w", err)
			}
			info.Parts = append(info.Parts, tusPart{Number: num, ETag: aws.ToString(res.CopyPartResult.ETag), Size: r[1] - r[0]})
		}
	}
	if info.SHA256, err = h.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
		return nil, err
	}
	next := &TusUpload{Info: info, etag: u.etag}
	if err := s.saveTus(ctx, next, false); err != nil {
		s.TerminateTus(ctx, u)
		return nil, err
	}
	return next, nil
}

// copyRanges splits size bytes into [start, end) ranges of about
// copyPartSize; a remainder below MinPartSize joins the range before it,
// so only a partial's single range can be short (the last partial's).
func copyRanges(size int64) [][2]int64 {
	var rs [][2]int64
	for off := int64(0); off < size; off += copyPartSize {
		rs = append(rs, [2]int64{off, min(off+copyPartSize, size)})
	}
	if n := len(rs); n > 1 && rs[n-1][1]-rs[n-1][0] < MinPartSize {
		rs[n-2][1] = rs[n-1][1]
		rs = rs[:n-1]
	}
	return rs
}
