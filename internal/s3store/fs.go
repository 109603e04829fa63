package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The range of a file's GETs: see file.Read.
const (
	minWindow = 32 << 10
	maxWindow = 64 << 20
)

// FS is the stored files as an fs.FS, for a file server: Open and Stat ask
// for the object's size and modification time (HeadObject); reads are
// ranged GetObjects, made when the first Read after an Open or a Seek
// comes, so serving a range costs one HEAD and one GET. A read is pinned
// to the ETag that Open saw: an object replaced meanwhile fails the read
// instead of mixing two versions. A key prefix that holds objects is a
// directory. The private folder is never opened (fs.ErrNotExist).
//
// ctx bounds every request of the files it opens.
func (s *Store) FS(ctx context.Context) fs.FS { return &bucketFS{s: s, ctx: ctx} }

type bucketFS struct {
	s   *Store
	ctx context.Context
}

// Open opens the object or directory name.
func (b *bucketFS) Open(name string) (fs.File, error) {
	info, etag, err := b.stat("open", name)
	if err != nil {
		return nil, err
	}
	if info.IsDir() {
		return &dir{b: b, name: name, info: info}, nil
	}
	return &file{b: b, key: b.s.Key(name), info: info, etag: etag}, nil
}

// Stat describes name without opening it.
func (b *bucketFS) Stat(name string) (fs.FileInfo, error) {
	info, _, err := b.stat("stat", name)
	if err != nil {
		return nil, err
	}
	return info, nil
}

// stat describes name: an object (with its ETag), else a directory when
// objects are under name/, else fs.ErrNotExist.
func (b *bucketFS) stat(op, name string) (fileInfo, string, error) {
	if !fs.ValidPath(name) {
		return fileInfo{}, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if isPrivate(name) {
		return fileInfo{}, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	if name == "." {
		return fileInfo{name: ".", dir: true}, "", nil
	}
	head, err := b.s.client.HeadObject(b.ctx, &s3.HeadObjectInput{Bucket: &b.s.bucket, Key: aws.String(b.s.Key(name))})
	if err == nil {
		return fileInfo{
			name:    path.Base(name),
			size:    aws.ToInt64(head.ContentLength),
			modTime: aws.ToTime(head.LastModified),
		}, aws.ToString(head.ETag), nil
	}
	if !isNotFound(err) {
		return fileInfo{}, "", &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("s3: %w", err)}
	}
	list, err := b.s.client.ListObjectsV2(b.ctx, &s3.ListObjectsV2Input{
		Bucket: &b.s.bucket, Prefix: aws.String(b.s.Key(name) + "/"), MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return fileInfo{}, "", &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("s3: %w", err)}
	}
	if len(list.Contents) == 0 {
		return fileInfo{}, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	return fileInfo{name: path.Base(name), dir: true}, "", nil
}

// fileInfo describes an object or a directory.
type fileInfo struct {
	name    string
	size    int64
	modTime time.Time
	dir     bool
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) ModTime() time.Time { return i.modTime }
func (i fileInfo) IsDir() bool        { return i.dir }
func (i fileInfo) Sys() any           { return nil }
func (i fileInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}

// file is an open object: an offset, and the body of the ranged GET that
// reads from it, opened lazily.
type file struct {
	b    *bucketFS
	key  string
	info fileInfo
	etag string

	off        int64         // where the next Read starts
	body       io.ReadCloser // nil, or a GET body positioned at bodyOff
	bodyOff    int64
	bodyEnd    int64 // where the body's range ends (exclusive)
	window     int64 // the size of the last GET's range
	sequential bool  // the next Read continues where the last GET ended
	closed     bool
}

func (f *file) Stat() (fs.FileInfo, error) { return f.info, nil }

// Read reads from the offset, opening a GET from there when no body is
// positioned at it. A GET asks for a window that starts at the size of the
// first read and doubles with each sequential one (up to maxWindow), so a
// short range costs no more than its bytes and a whole file few requests,
// and a body is read to its end (its connection reused) when reading goes on.
func (f *file) Read(p []byte) (int, error) {
	if f.closed {
		return 0, fs.ErrClosed
	}
	if f.off >= f.info.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.body != nil && (f.bodyOff != f.off || f.bodyEnd <= f.off) {
		f.closeBody()
	}
	if f.body == nil {
		if f.sequential {
			f.window = min(max(2*f.window, minWindow), maxWindow)
		} else {
			f.window = int64(len(p))
		}
		end := min(f.off+max(f.window, int64(len(p))), f.info.size)
		body, err := f.get(f.off, end-1)
		if err != nil {
			return 0, err
		}
		f.body, f.bodyOff, f.bodyEnd = body, f.off, end
	}
	n, err := f.body.Read(p[:min(int64(len(p)), f.bodyEnd-f.off)])
	f.off += int64(n)
	f.bodyOff += int64(n)
	if err == io.EOF && f.off < f.bodyEnd {
		err = io.ErrUnexpectedEOF
	}
	if err != nil || f.off == f.bodyEnd {
		f.closeBody()
		// The next GET continues this one: its window may grow.
		f.sequential = err == nil || err == io.EOF
	}
	if err == io.EOF && f.off < f.info.size {
		err = nil
	}
	return n, err
}

// get opens a GET of the bytes first..last (inclusive), pinned to the
// ETag seen at Open.
func (f *file) get(first, last int64) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{
		Bucket: &f.b.s.bucket,
		Key:    &f.key,
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", first, last)),
	}
	if f.etag != "" {
		in.IfMatch = &f.etag
	}
	out, err := f.b.s.client.GetObject(f.b.ctx, in)
	if err != nil {
		if isPrecondition(err) {
			return nil, fmt.Errorf("s3: %s changed while it was read", f.info.name)
		}
		return nil, fmt.Errorf("s3: reading %s: %w", f.info.name, err)
	}
	return out.Body, nil
}

// Seek moves the offset; the next Read opens a GET there.
func (f *file) Seek(offset int64, whence int) (int64, error) {
	if f.closed {
		return 0, fs.ErrClosed
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.info.size
	default:
		return 0, errors.New("s3: seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("s3: seek: negative position")
	}
	if offset != f.off {
		f.sequential = false
	}
	f.off = offset
	return offset, nil
}

// ReadAt reads len(p) bytes at off with a GET of its own; it is safe to
// call concurrently and leaves the offset alone.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if f.closed {
		return 0, fs.ErrClosed
	}
	if off < 0 {
		return 0, errors.New("s3: read at a negative offset")
	}
	if off >= f.info.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	want := min(int64(len(p)), f.info.size-off)
	body, err := f.get(off, off+want-1)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	n, err := io.ReadFull(body, p[:want])
	if err == nil && want < int64(len(p)) {
		err = io.EOF
	}
	if err == io.ErrUnexpectedEOF || (err == io.EOF && n < int(want)) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close ends the GET in progress, if any.
func (f *file) Close() error {
	if f.closed {
		return fs.ErrClosed
	}
	f.closed = true
	f.closeBody()
	return nil
}

func (f *file) closeBody() {
	if f.body != nil {
		f.body.Close()
		f.body = nil
	}
}

// dir is a key prefix that holds objects.
type dir struct {
	b       *bucketFS
	name    string
	info    fileInfo
	entries []fs.DirEntry
	listed  bool
}

func (d *dir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: errors.New("is a directory")}
}
func (d *dir) Close() error { return nil }

// ReadDir lists the directory one level deep (sorted by name, as S3
// lists), without the private folder.
func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	if !d.listed {
		if err := d.list(); err != nil {
			return nil, err
		}
		d.listed = true
	}
	if n <= 0 {
		all := d.entries
		d.entries = nil
		return all, nil
	}
	if len(d.entries) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(d.entries))
	out := d.entries[:n]
	d.entries = d.entries[n:]
	return out, nil
}

func (d *dir) list() error {
	prefix := d.b.s.prefix
	if d.name != "." {
		prefix = d.b.s.Key(d.name) + "/"
	}
	p := s3.NewListObjectsV2Paginator(d.b.s.client, &s3.ListObjectsV2Input{
		Bucket: &d.b.s.bucket, Prefix: &prefix, Delimiter: aws.String("/"),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(d.b.ctx)
		if err != nil {
			return &fs.PathError{Op: "readdir", Path: d.name, Err: fmt.Errorf("s3: %w", err)}
		}
		for _, cp := range page.CommonPrefixes {
			name := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), prefix), "/")
			if name == "" || (d.name == "." && name == Private) {
				continue
			}
			d.entries = append(d.entries, fs.FileInfoToDirEntry(fileInfo{name: name, dir: true}))
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			if name == "" || strings.Contains(name, "/") {
				continue
			}
			d.entries = append(d.entries, fs.FileInfoToDirEntry(fileInfo{
				name: name, size: aws.ToInt64(o.Size), modTime: aws.ToTime(o.LastModified),
			}))
		}
	}
	slices.SortFunc(d.entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return nil
}

// MaxPresignTTL is the longest a presigned URL can be valid: SigV4's bound.
const MaxPresignTTL = 7 * 24 * time.Hour

// PresignOptions shape a presigned URL's answer.
type PresignOptions struct {
	// ContentDisposition and ContentType, when set, override the headers
	// of the answer (response-content-disposition, response-content-type),
	// so a presigned download carries the same safe headers as one served.
	ContentDisposition, ContentType string
}

// PresignGet returns a URL that GETs name (relative to the store) for ttl
// without credentials. Names in the private folder are refused. It sends
// no request: the object may not exist.
func (s *Store) PresignGet(ctx context.Context, name string, ttl time.Duration, opts PresignOptions) (string, error) {
	return s.presignRequest(ctx, http.MethodGet, name, ttl, opts)
}

// PresignFile returns a URL that answers method (GET or HEAD: a URL is
// signed for one method) for the stored file name for ttl without
// credentials, once a HeadObject has found it. A name that FS would not
// open as a file is fs.ErrNotExist: missing, a directory (a key prefix
// that holds objects), or in the private folder.
func (s *Store) PresignFile(ctx context.Context, method, name string, ttl time.Duration, opts PresignOptions) (string, error) {
	if method != http.MethodGet && method != http.MethodHead {
		return "", fmt.Errorf("s3: presigning %s: only GET and HEAD", method)
	}
	info, _, err := (&bucketFS{s: s, ctx: ctx}).stat("presign", name)
	if err != nil {
		return "", err
	}
	if info.IsDir() {
		return "", &fs.PathError{Op: "presign", Path: name, Err: fs.ErrNotExist}
	}
	return s.presignRequest(ctx, method, name, ttl, opts)
}

// presignRequest presigns a GET or HEAD of name for ttl.
func (s *Store) presignRequest(ctx context.Context, method, name string, ttl time.Duration, opts PresignOptions) (string, error) {
	if !fs.ValidPath(name) || name == "." || isPrivate(name) {
		return "", &fs.PathError{Op: "presign", Path: name, Err: fs.ErrNotExist}
	}
	if ttl < time.Second || ttl > MaxPresignTTL {
		return "", fmt.Errorf("s3: a presigned URL is valid from 1s to 7 days, not %v", ttl)
	}
	var disp, ctype *string
	if opts.ContentDisposition != "" {
		disp = &opts.ContentDisposition
	}
	if opts.ContentType != "" {
		ctype = &opts.ContentType
	}
	key := aws.String(s.Key(name))
	var (
		req *v4.PresignedHTTPRequest
		err error
	)
	if method == http.MethodHead {
		req, err = s.presign.PresignHeadObject(ctx, &s3.HeadObjectInput{
			Bucket: &s.bucket, Key: key, ResponseContentDisposition: disp, ResponseContentType: ctype,
		}, s3.WithPresignExpires(ttl))
	} else {
		req, err = s.presign.PresignGetObject(ctx, &s3.GetObjectInput{
			Bucket: &s.bucket, Key: key, ResponseContentDisposition: disp, ResponseContentType: ctype,
		}, s3.WithPresignExpires(ttl))
	}
	if err != nil {
		return "", fmt.Errorf("s3: presigning: %w", err)
	}
	return req.URL, nil
}

var (
	_ fs.StatFS      = (*bucketFS)(nil)
	_ io.ReadSeeker  = (*file)(nil)
	_ io.ReaderAt    = (*file)(nil)
	_ fs.ReadDirFile = (*dir)(nil)
)
