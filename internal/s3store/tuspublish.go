package s3store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

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
