// Package s3store keeps uploads in an S3-compatible object store (AWS S3,
// R2, B2, Ceph, versitygw): streaming writes that make an object visible
// only when committed, under a conflict policy carried by conditional
// writes; a janitor for what failed uploads leave behind; and serving
// through an fs.FS with ranged reads, or a presigned URL.
//
// It has no Caddy imports: the storage backend module is a thin adapter
// over it.
//
// Layout in the bucket, under the configured key prefix:
//
//	<prefix><name>                    stored files
//	<prefix>.uploads/                 private: never served
//	<prefix>.uploads/staging/<id>     an upload whose final name is not known
//	                                  yet (see WriterOptions.Key)
//	<prefix>.uploads/tus/<id>...      tus uploads (see tus.go)
package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Part sizes. S3 needs every part of a multipart upload but the last to
// be at least 5 MiB (versitygw enforces it too) and allows 10,000 parts.
const (
	MinPartSize     = 5 << 20
	DefaultPartSize = 8 << 20
	maxPartSize     = 5 << 30
	maxParts        = 10000
)

// Private is the folder under the key prefix that holds what is not a
// stored file (staging objects, later the tus state). FS never opens it.
const Private = ".uploads"

// stagingDir holds the objects of writers whose final name is not known
// yet, under the private folder.
const stagingDir = Private + "/staging/"

// ErrExists is returned by Commit under the Reject and Rename policies
// when an object already has the key.
var ErrExists = errors.New("an object with that name exists")

// ErrClosed is returned by a Writer used after Commit or Abort.
var ErrClosed = errors.New("writer is closed")

// Config says where the objects go.
type Config struct {
	// Endpoint is the store's URL (https://host[:port]); empty means AWS S3.
	Endpoint string
	// Region signs the requests; empty means us-east-1.
	Region string
	// Bucket holds the objects; required.
	Bucket string
	// Prefix is put before every key ("uploads" and "uploads/" are the
	// same); empty means the bucket's root.
	Prefix string
	// AccessKey and SecretKey are the credentials; required.
	AccessKey, SecretKey string
	// PathStyle addresses the bucket as a path (host/bucket/key) instead
	// of a host name (bucket.host/key); most self-hosted stores need it.
	PathStyle bool
	// PartSize is the size of a multipart upload's parts and of the local
	// spool file behind each writer; 0 means DefaultPartSize, and it is
	// never below MinPartSize.
	PartSize int64
	// TempDir holds the spool files; empty means os.TempDir().
	TempDir string
	// HTTPClient sends the requests; nil means the SDK's default.
	HTTPClient *http.Client
}

// Store is a bucket and key prefix with the S3 client that reaches them.
// It is safe for concurrent use.
type Store struct {
	client   *s3.Client
	presign  *s3.PresignClient
	bucket   string
	prefix   string
	partSize int64
	tempDir  string
	// signPayload: the writes carry the SHA-256 of their body, signed,
	// computed while the body spools. On for an endpoint on plain HTTP,
	// where nothing else protects the bytes on the way; off over TLS,
	// where the SDK sends UNSIGNED-PAYLOAD (as AWS advises: TLS protects
	// the bytes, and the store need not hash them once more).
	signPayload bool
}

// New checks cfg and returns its Store. It sends no request.
func New(cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: bucket is required")
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("s3: access_key and secret_key are required")
	}
	if cfg.PartSize > maxPartSize {
		return nil, fmt.Errorf("s3: part size %d is above the 5 GiB that S3 allows", cfg.PartSize)
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	opts := s3.Options{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		UsePathStyle: cfg.PathStyle,
		// Checksums only where S3 requires them: the bytes of a write
		// are covered by TLS, or by the signed payload hash on plain HTTP
		// (see signPayload). The SDK's default (WhenSupported) adds a
		// CRC32 to each write, which on plain HTTP it computes by reading
		// the body once more before sending it (writes to versitygw were
		// about a third slower); and compatible stores differ in the
		// newer checksum headers.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	}
	client := s3.New(opts)
	part := cfg.PartSize
	if part == 0 {
		part = DefaultPartSize
	}
	part = max(part, MinPartSize)
	return &Store{
		client:      client,
		presign:     s3.NewPresignClient(client),
		bucket:      cfg.Bucket,
		prefix:      normalizePrefix(cfg.Prefix),
		partSize:    part,
		tempDir:     cfg.TempDir,
		signPayload: strings.HasPrefix(strings.ToLower(cfg.Endpoint), "http:"),
	}, nil
}

// normalizePrefix turns "a", "/a/" and "a/" into "a/", and "" or "/" into "".
func normalizePrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return p + "/"
}

// Client is the S3 client, for what this package does not wrap.
func (s *Store) Client() *s3.Client { return s.client }

// Bucket is the configured bucket.
func (s *Store) Bucket() string { return s.bucket }

// Key turns a slash-separated name relative to the store into the object
// key (the prefix before it).
func (s *Store) Key(name string) string { return s.prefix + name }

// PartSize is the part size in effect.
func (s *Store) PartSize() int64 { return s.partSize }

// isPrivate reports whether a name relative to the store is in the
// private folder.
func isPrivate(name string) bool {
	return name == Private || strings.HasPrefix(name, Private+"/")
}

// statusOf is the HTTP status of an S3 error, 0 for an error that is not
// an S3 answer.
func statusOf(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// codeOf is the S3 error code ("PreconditionFailed", "NoSuchKey"), "" for
// an error that carries none.
func codeOf(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// isPrecondition reports whether err says a conditional write lost: 412
// (the condition is false) or 409 ConditionalRequestConflict (AWS: a
// concurrent conditional write to the key won).
func isPrecondition(err error) bool {
	st := statusOf(err)
	return st == http.StatusPreconditionFailed || codeOf(err) == "PreconditionFailed" ||
		(st == http.StatusConflict && codeOf(err) == "ConditionalRequestConflict")
}

// isNotFound reports whether err says the key or upload does not exist.
func isNotFound(err error) bool {
	switch codeOf(err) {
	case "NoSuchKey", "NotFound", "NoSuchUpload":
		return true
	}
	return statusOf(err) == http.StatusNotFound
}

// cleanupContext is for the requests that undo a failed write: they run
// even when the write's own context was cancelled, bounded in time.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}
