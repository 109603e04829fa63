package s3store

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// copyObject copies the object src of size bytes (more than 0) under dst,
// in a multipart upload of UploadPartCopy ranges completed under policy
// (so that it is all or nothing, and conditional). On failure the copy's
// upload is aborted; ErrExists when policy is Reject and dst exists.
//
// Not CopyObject: it stops at 5 GiB, and versitygw v1.8.0 ignores
// If-None-Match on it (it replaced an existing object when probed), while
// it honours it on CompleteMultipartUpload.
func (s *Store) copyObject(ctx context.Context, src string, size int64, dst string, policy Policy, contentType string) error {
	in := &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &dst}
	if contentType != "" {
		in.ContentType = &contentType
	}
	out, err := s.client.CreateMultipartUpload(ctx, in)
	if err != nil {
		return fmt.Errorf("s3: starting the copy: %w", err)
	}
	id := out.UploadId
	abort := func() {
		ctx, cancel := cleanupContext(ctx)
		defer cancel()
		s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &dst, UploadId: id})
	}
	source := url.PathEscape(s.bucket) + "/" + escapeKey(src)
	var parts []types.CompletedPart
	for off := int64(0); off < size; off += copyPartSize {
		end := min(off+copyPartSize, size) - 1
		num := int32(len(parts) + 1)
		res, err := s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
			Bucket:          &s.bucket,
			Key:             &dst,
			UploadId:        id,
			PartNumber:      &num,
			CopySource:      &source,
			CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
		})
		if err != nil {
			abort()
			return fmt.Errorf("s3: copying part %d: %w", num, err)
		}
		parts = append(parts, types.CompletedPart{ETag: res.CopyPartResult.ETag, PartNumber: &num})
	}
	if err := s.complete(ctx, dst, aws.ToString(id), parts, policy); err != nil {
		abort()
		return err
	}
	return nil
}

// complete completes a multipart upload under policy (Reject: If-None-Match,
// ErrExists on 412, the upload left open).
//
// A conditional Complete is sent once, not retried: a retry after a lost
// answer would find its own object and say 412. Any Complete whose answer
// went missing (no answer, or NoSuchUpload from a retry because the first
// try completed) is resolved by the object's ETag: it is ours when it is
// the multipart ETag of our parts (the MD5 of their MD5s, "-" and their
// count, as S3 and versitygw make it).
func (s *Store) complete(ctx context.Context, key, uploadID string, parts []types.CompletedPart, policy Policy) error {
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          &s.bucket,
		Key:             &key,
		UploadId:        &uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	var optFns []func(*s3.Options)
	if policy == Reject {
		in.IfNoneMatch = aws.String("*")
		optFns = append(optFns, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	}
	_, err := s.client.CompleteMultipartUpload(ctx, in, optFns...)
	if err == nil {
		return nil
	}
	if isPrecondition(err) {
		return ErrExists
	}
	if (statusOf(err) == 0 || codeOf(err) == "NoSuchUpload") && ctx.Err() == nil {
		head, herr := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
		if herr == nil && strings.Trim(aws.ToString(head.ETag), `"`) == multipartETag(parts) {
			return nil
		}
	}
	return fmt.Errorf("s3: completing the multipart upload: %w", err)
}

// multipartETag is the ETag S3 gives the object completed from parts.
func multipartETag(parts []types.CompletedPart) string {
	h := md5.New()
	for _, p := range parts {
		b, err := hex.DecodeString(strings.Trim(aws.ToString(p.ETag), `"`))
		if err != nil {
			return "" // not an MD5: cannot tell
		}
		h.Write(b)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(parts))
}

// escapeKey escapes a key for CopySource: each segment, keeping slashes.
func escapeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		segs[i] = strings.ReplaceAll(url.PathEscape(seg), "+", "%2B")
	}
	return strings.Join(segs, "/")
}
