package s3store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// TusStates gives the states of the resumable uploads in the bucket. fsync
// has no meaning here: a state is durable once its write is answered.
func (f *Files) TusStates(bool) tus.States { return tusStates{f} }

type tusStates struct{ f *Files }

// Load implements tus.States: the Info, with the layout's offset.
func (s tusStates) Load(ctx context.Context, id string) (*tus.Info, error) {
	ctx = context.WithoutCancel(ctx) // an interrupted request still answers
	u, err := s.f.s.getTus(ctx, id)
	if err != nil {
		return nil, tusNotFound(id, err)
	}
	if u.Info.Upload == nil {
		return nil, fmt.Errorf("upload %s: %w", id, fs.ErrNotExist)
	}
	info := *u.Info.Upload
	info.Offset = u.Info.Offset()
	if info.Metadata, err = tus.ParseMetadata(info.MetadataRaw); err != nil {
		return nil, fmt.Errorf("upload state %s: %w", id, err)
	}
	return &info, nil
}

// Save implements tus.States. The open Append of the upload, if any,
// commits its bytes with info; otherwise info is saved over the state as
// it is now, at its offset (tus.ErrStale if the offset is another).
func (s tusStates) Save(ctx context.Context, info *tus.Info) error {
	ctx = context.WithoutCancel(ctx)
	if ss := s.f.session(info.ID); ss != nil {
		return ss.save(ctx, info)
	}
	u, err := s.f.s.getTus(ctx, info.ID)
	create := errors.Is(err, ErrNotFound) && tus.ValidID(info.ID) && (info.Offset == 0 || info.Done)
	if create {
		// A state of its own: a final upload of a concatenation (stored
		// already), or an empty upload.
		u = &TusUpload{Info: TusInfo{ID: info.ID, Size: info.Length, Created: info.Created, Completed: info.Done, Published: info.Done}}
	} else if err != nil {
		return tusNotFound(info.ID, err)
	}
	if got := u.Info.Offset(); got != info.Offset {
		return fmt.Errorf("%w: it is at %d, not %d", ErrStale, got, info.Offset)
	}
	if !u.Info.Completed {
		u.Info.Size = info.Length
	}
	u.Info.Upload = info
	return s.f.s.saveTus(ctx, u, create)
}

// Delete implements tus.States.
func (s tusStates) Delete(ctx context.Context, id string) error {
	if !tus.ValidID(id) {
		return nil
	}
	key := s.f.s.tusKey(id, ".info")
	_, err := s.f.s.client.DeleteObject(context.WithoutCancel(ctx), &s3.DeleteObjectInput{Bucket: &s.f.s.bucket, Key: &key})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("s3: removing the upload's state: %w", err)
	}
	return nil
}

// List implements tus.States: every upload with a state object.
func (s tusStates) List(ctx context.Context) ([]string, error) {
	ctx = context.WithoutCancel(ctx) // an interrupted request still answers
	dir := s.f.s.Key(tusDir)
	var ids []string
	p := s3.NewListObjectsV2Paginator(s.f.s.client, &s3.ListObjectsV2Input{Bucket: &s.f.s.bucket, Prefix: &dir})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3: listing tus uploads: %w", err)
		}
		for _, o := range page.Contents {
			if id, ok := strings.CutSuffix(strings.TrimPrefix(aws.ToString(o.Key), dir), ".info"); ok && tus.ValidID(id) {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}
