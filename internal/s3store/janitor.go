package s3store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Swept counts what Sweep removed.
type Swept struct {
	// Uploads is the number of multipart uploads aborted.
	Uploads int
	// Staging is the number of staging objects removed.
	Staging int
}

// Sweep removes what writers that never finished left behind (a process
// killed mid-upload, a cleanup request that failed): it aborts the
// multipart uploads under the prefix started before now-age, and removes
// the staging objects last modified before then. Multipart uploads of
// resumable uploads (those of the private folder other than staging, and
// those that a state names under a file's name) are left alone: they keep
// their own expiry. now is the caller's clock.
func (s *Store) Sweep(ctx context.Context, age time.Duration, now time.Time) (Swept, error) {
	var swept Swept
	cutoff := now.Add(-age)
	private := s.prefix + Private + "/"
	staging := s.prefix + stagingDir
	live, err := s.namedTusUploads(ctx)
	if err != nil {
		return swept, err
	}
	in := &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: &s.prefix}
	for {
		page, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return swept, fmt.Errorf("s3: listing multipart uploads: %w", err)
		}
		for _, u := range page.Uploads {
			if u.Key == nil || u.UploadId == nil || u.Initiated == nil || !u.Initiated.Before(cutoff) {
				continue
			}
			if strings.HasPrefix(*u.Key, private) && !strings.HasPrefix(*u.Key, staging) || live[*u.UploadId] {
				continue
			}
			_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId,
			})
			if err != nil && !isNotFound(err) {
				return swept, fmt.Errorf("s3: aborting a stale multipart upload: %w", err)
			}
			swept.Uploads++
		}
		if page.IsTruncated == nil || !*page.IsTruncated {
			break
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &staging})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return swept, fmt.Errorf("s3: listing staging objects: %w", err)
		}
		for _, o := range page.Contents {
			if o.Key == nil || o.LastModified == nil || !o.LastModified.Before(cutoff) {
				continue
			}
			_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: o.Key})
			if err != nil && !isNotFound(err) {
				return swept, fmt.Errorf("s3: removing a stale staging object: %w", err)
			}
			swept.Staging++
		}
	}
	return swept, nil
}

// namedTusUploads is the set of the multipart uploads that resumable
// uploads' states name under a file's name (made by CreateAs).
func (s *Store) namedTusUploads(ctx context.Context) (map[string]bool, error) {
	live := map[string]bool{}
	dir := s.Key(tusDir)
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &dir})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3: listing tus uploads: %w", err)
		}
		for _, o := range page.Contents {
			id, ok := strings.CutSuffix(strings.TrimPrefix(aws.ToString(o.Key), dir), ".info")
			if !ok {
				continue
			}
			u, err := s.getTus(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue // removed since
			}
			if err != nil {
				return nil, err
			}
			if u.Info.Name != "" && u.Info.UploadID != "" {
				live[u.Info.UploadID] = true
			}
		}
	}
	return live, nil
}
