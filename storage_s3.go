package reflexupload

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/reflexupload/caddy-reflex-upload/internal/s3store"
)

func init() {
	caddy.RegisterModule(S3Storage{})
}

// S3Storage keeps the files in an S3-compatible object store (AWS S3, R2,
// B2, Ceph, versitygw). A file streams into the bucket while it arrives
// (one part at a time through a local spool file) and its object appears
// only once the whole request is accepted; a failure aborts it. Conflict
// policies are conditional writes (If-None-Match: *). Files are served
// from the bucket with ranged reads, or, with Redirect, by a redirect to a
// presigned URL of the bucket. Resumable (tus) uploads are kept in the
// bucket too, so that several instances can take each other's on.
type S3Storage struct {
	// Bucket holds the objects; required.
	Bucket string `json:"bucket,omitempty"`
	// Endpoint is the store's URL (https://host[:port]). Default: AWS S3.
	Endpoint string `json:"endpoint,omitempty"`
	// Region signs the requests. Default: us-east-1.
	Region string `json:"region,omitempty"`
	// Prefix is put before every object key ("site/a.png"). Default: none,
	// the bucket's root.
	Prefix string `json:"prefix,omitempty"`
	// AccessKey and SecretKey are the credentials; required. Placeholders
	// such as {env.S3_SECRET_KEY} are replaced at provision.
	AccessKey string `json:"access_key,omitempty"`
	SecretKey string `json:"secret_key,omitempty"`
	// PathStyle addresses the bucket as a path (host/bucket/key) rather
	// than a host name (bucket.host/key); most self-hosted stores need it.
	// Default: false.
	PathStyle bool `json:"path_style,omitempty"`
	// Redirect, when set, answers GET and HEAD of a stored file with a 307
	// redirect (Cache-Control: private, no-store) to a presigned URL of
	// the bucket valid this long (from 1s to 7 days), so the client
	// fetches the bytes from the store itself. The module first checks
	// that the file exists (one HEAD of the object: a missing file is a
	// 404, never a redirect), and the URL makes the store answer with the
	// Content-Type and Content-Disposition a served file has. Default 0:
	// files are served through Caddy.
	Redirect caddy.Duration `json:"redirect,omitempty"`

	cfg s3store.Config
}

// CaddyModule returns the Caddy module information.
func (S3Storage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reflex_upload.storage.s3",
		New: func() caddy.Module { return new(S3Storage) },
	}
}

// Provision resolves the placeholders and checks the options.
func (s *S3Storage) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	s.cfg = s3store.Config{
		Bucket:    repl.ReplaceKnown(s.Bucket, ""),
		Endpoint:  repl.ReplaceKnown(s.Endpoint, ""),
		Region:    repl.ReplaceKnown(s.Region, ""),
		Prefix:    repl.ReplaceKnown(s.Prefix, ""),
		AccessKey: repl.ReplaceKnown(s.AccessKey, ""),
		SecretKey: repl.ReplaceKnown(s.SecretKey, ""),
		PathStyle: s.PathStyle,
	}
	if _, err := s3store.New(s.cfg); err != nil {
		return fmt.Errorf("storage s3: %w", err)
	}
	if r := time.Duration(s.Redirect); r != 0 && (r < time.Second || r > s3store.MaxPresignTTL) {
		return fmt.Errorf("storage s3: redirect %v: a presigned URL is valid from 1s to 7 days", r)
	}
	return nil
}

// redirectTTL implements redirectStorage.
func (s *S3Storage) redirectTTL() time.Duration { return time.Duration(s.Redirect) }

// OpenStorage implements Storage. dir names the upload root; the files are
// in the bucket.
func (s *S3Storage) OpenStorage(string) (Stored, error) {
	st, err := s3store.New(s.cfg)
	if err != nil {
		return nil, fmt.Errorf("storage s3: %w", err)
	}
	return s3Stored{s3store.NewFiles(st)}, nil
}

// s3Stored is an open S3 storage.
type s3Stored struct{ *s3store.Files }

// presignFile implements presigner: one HEAD of the object, then a
// presigned URL of it.
func (s s3Stored) presignFile(ctx context.Context, method, name string, ttl time.Duration, ctype, disposition string) (string, error) {
	return s.Store().PresignFile(ctx, method, name, ttl, s3store.PresignOptions{ContentType: ctype, ContentDisposition: disposition})
}

// SweepStale aborts the multipart uploads and removes the staging objects
// that writers older than age left behind (a process killed mid-upload),
// and what resumable uploads that no state names left in the tus folder.
func (s s3Stored) SweepStale(ctx context.Context, age time.Duration, now time.Time) (int, error) {
	swept, err := s.Store().Sweep(ctx, age, now)
	if err != nil {
		return swept.Uploads + swept.Staging, err
	}
	orphans, err := s.Store().SweepTusOrphans(ctx, age, now)
	return swept.Uploads + swept.Staging + orphans, err
}

// UnmarshalCaddyfile reads
//
//	storage s3 {
//		bucket     <name>
//		endpoint   <url>
//		region     <region>
//		prefix     <key prefix>
//		access_key <key>
//		secret_key <secret>
//		path_style
//		redirect   <duration>
//	}
func (s *S3Storage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the backend's name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("storage s3: %s given twice", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		if opt == "redirect" {
			if len(args) != 1 {
				return d.Errf("storage s3: redirect takes one duration")
			}
			ttl, err := caddy.ParseDuration(args[0])
			if err != nil {
				return d.Errf("storage s3: parsing redirect: %v", err)
			}
			s.Redirect = caddy.Duration(ttl)
			continue
		}
		if opt == "path_style" {
			if len(args) != 0 {
				return d.Errf("storage s3: path_style takes no value")
			}
			s.PathStyle = true
			continue
		}
		var field *string
		switch opt {
		case "bucket":
			field = &s.Bucket
		case "endpoint":
			field = &s.Endpoint
		case "region":
			field = &s.Region
		case "prefix":
			field = &s.Prefix
		case "access_key":
			field = &s.AccessKey
		case "secret_key":
			field = &s.SecretKey
		default:
			return d.Errf("storage s3: unknown option %q", opt)
		}
		if len(args) != 1 {
			return d.Errf("storage s3: %s takes one value", opt)
		}
		*field = args[0]
	}
	if s.Bucket == "" {
		return errors.New("storage s3: bucket is required")
	}
	return nil
}

// Interface guards
var (
	_ Storage               = (*S3Storage)(nil)
	_ Stored                = s3Stored{}
	_ presigner             = s3Stored{}
	_ redirectStorage       = (*S3Storage)(nil)
	_ caddy.Provisioner     = (*S3Storage)(nil)
	_ caddyfile.Unmarshaler = (*S3Storage)(nil)
)
