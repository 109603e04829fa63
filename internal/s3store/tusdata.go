package s3store

import (
	"context"
	"crypto/sha256"
	"encoding"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// AppendTus appends r at the upload's offset (at most up to its size, when
// known): the tail and the new bytes spool into a local file of one part,
// each whole part is uploaded, what is left becomes the new tail, and the
// state (with the hash of all bytes so far) is saved with If-Match. It
// returns how many bytes of r it kept; when r fails midway, the bytes read
// until then are kept (tus resumes from there) and r's error is returned
// beside. ErrStale means another writer saved in between: nothing counts.
//
// The store's requests are not cancelled with ctx (its values are kept):
// what was received is saved even when the client went away or its
// request was cancelled. The reader is what stops an append (a body read
// that fails, as when a deadline unblocks it).
func (s *Store) AppendTus(ctx context.Context, u *TusUpload, r io.Reader) (int64, error) {
	ctx = context.WithoutCancel(ctx)
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
