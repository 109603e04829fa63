// Package reflexupload is a Caddy HTTP handler that gives any site a complete
// file-upload backend: streaming multipart uploads with limits enforced while
// the bytes arrive, all-or-nothing storage under a root folder, and safe
// serving of what was stored. See README.md for the URL space and options.
package reflexupload

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
	"go.uber.org/zap"

	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
	"github.com/reflexupload/caddy-reflex-upload/internal/progress"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the options.
const (
	defaultRoot   = "uploaded_files"
	defaultPrefix = "/_upload"
	defaultOwner  = "{http.request.header.Reflex-Client-Token}"

	defaultMaxFieldsSize = 4 << 20
	defaultIdleTimeout   = time.Minute
	defaultChunkExpiry   = 24 * time.Hour
	rootEnvVar           = "REFLEX_UPLOADED_FILES_DIR"
)

// Conflict policies: what a new file does to one of the same name.
const (
	conflictOverwrite = "overwrite"
	conflictRename    = "rename"
	conflictReject    = "reject"
)

// Modes: what the module does with an upload.
const (
	modeStore   = "store"
	modeForward = "forward"
	modeTrack   = "track"
)

// Hash algorithms reported per file.
const (
	hashSHA256 = "sha256"
	hashNone   = "none"
)

// Handler is the reflex_upload HTTP handler: a file-upload backend for the
// site. It answers the requests under its prefix (uploads, and GET/HEAD of
// stored files) and passes every other request to the next handler.
type Handler struct {
	// The folder uploaded files are stored in, created if missing. Global
	// placeholders such as {env.VAR} are expanded. Default: the value of the
	// REFLEX_UPLOADED_FILES_DIR environment variable if set, else
	// "./uploaded_files" (both as Reflex does). Its ".uploads" subfolder is
	// private to the module (temporary files) and never served.
	Root string `json:"root,omitempty"`

	// The URL path under which uploads are received (POST {prefix}) and
	// stored files are served (GET {prefix}/{path}). It starts with "/" and
	// has no trailing slash. Default: "/_upload".
	Prefix string `json:"prefix,omitempty"`

	// The largest size of one file, in bytes; a larger file is refused with
	// 413 file-too-large as soon as the limit is passed. 0 means no limit
	// (the default).
	MaxSize int64 `json:"max_size,omitempty"`

	// The smallest size of one file, in bytes; a smaller file is refused with
	// 422 file-too-small. 0 means no minimum (the default).
	MinSize int64 `json:"min_size,omitempty"`

	// The most files one request may hold; one more is refused with 422
	// too-many-files. 0 means no limit (the default).
	MaxFiles int `json:"max_files,omitempty"`

	// The largest size of a whole upload request body, in bytes, counted as
	// it is read; a larger one is refused with 413 request-too-large. 0 means
	// no limit (the default).
	MaxRequestSize int64 `json:"max_request_size,omitempty"`

	// The most bytes of text fields (names and values) one standard upload
	// may carry in all; more is refused with 413 fields-too-large. Each field
	// is also limited to 1 MiB, and a request to 1000 fields. Default: 4 MiB
	// (0 means the default).
	MaxFieldsSize int64 `json:"max_fields_size,omitempty"`

	// The file types accepted, in the form of react-dropzone's accept prop,
	// flattened: MIME types ("image/png"), wildcards ("image/*") and
	// extensions (".pdf"). A file must match by its name, its declared type
	// and its content (magic bytes), or it is refused with 415
	// file-invalid-type. Empty means any type (the default).
	Accept []string `json:"accept,omitempty"`

	// What a new file does when one of the same name exists: "overwrite"
	// replaces it atomically (the default, as Reflex apps do), "rename" stores
	// the new one as "name (1).ext", "reject" refuses it with 409 file-exists.
	OnConflict string `json:"on_conflict,omitempty"`

	// Whether each file (and its folder) is flushed to stable storage before
	// the upload is answered, so that a 201 means the bytes are on disk.
	// Default: true.
	Fsync *bool `json:"fsync,omitempty"`

	// The hash computed while each file is received and reported with it:
	// "sha256" (the default) or "none".
	Hash string `json:"hash,omitempty"`

	// Who an upload belongs to: a placeholder evaluated for each request.
	// An upload made with a non-empty owner value can be seen (progress) and
	// cancelled only by requests with the same value; other requests see it
	// as unknown. With an empty value, the upload id is the only secret.
	// Default: "{http.request.header.Reflex-Client-Token}", the token of
	// the Reflex client that sent it. Use an authenticated user id where one
	// is available (e.g. "{http.auth.user.id}").
	Owner string `json:"owner,omitempty"`

	// How long a finished upload's progress (done, error, cancelled) stays
	// readable. Default: 60s. At most 10000 finished uploads are kept per
	// upload root; beyond that the oldest are forgotten first.
	ProgressRetention caddy.Duration `json:"progress_retention,omitempty"`

	// How long an upload request may go without receiving a byte before it
	// is dropped (the deadline moves with every byte, so a slow client is
	// not cut, a dead one is). Default: 1m. It can only tighten Caddy's own
	// server timeouts, not loosen them.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// What the module does with an upload: "store" answers it itself (the
	// default); "forward" stores the files and then passes the request on
	// to the next handler (typically reverse_proxy to the app) with the body
	// replaced by the JSON of the stored files; "track" stores nothing and
	// streams the original body on to the next handler unchanged, while it
	// counts progress, enforces the limits and can cancel.
	Mode string `json:"mode,omitempty"`

	// In forward mode, the statuses of the app's answer that count as a
	// refusal, after which the stored files are removed: codes ("409") or
	// classes ("4xx"). Default: 4xx and 5xx.
	ForwardFailStatus []string `json:"forward_fail_status,omitempty"`

	// The origins (scheme://host[:port], or "*") allowed to make
	// cross-origin requests to the upload endpoints: their preflight
	// requests are answered and their requests get the CORS headers. Empty
	// (the default) means none: no CORS header is ever sent.
	CORSOrigins []string `json:"cors_origins,omitempty"`

	// Whether cross-origin requests from an allowed origin may carry
	// credentials (cookies): Access-Control-Allow-Credentials: true. It
	// cannot go with the "*" origin. Default: false.
	CORSCredentials bool `json:"cors_credentials,omitempty"`

	// How long an unfinished resumable (tus) upload is kept after its last
	// write before it expires (Upload-Expires) and a background sweeper
	// removes it. Default: 24h.
	ChunkExpiry caddy.Duration `json:"chunk_expiry,omitempty"`

	// Where the uploaded files and the resumable uploads are kept: a
	// module in the http.reflex_upload.storage namespace, named by its
	// "backend" key. Default: local (the root folder). The first handler
	// of an upload root opens it; the others share it.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=http.reflex_upload.storage inline_key=backend"`

	// Where the state that requests share is kept: the one-writer lock of
	// resumable uploads and the progress registry (progress, cancel). A
	// module in the http.reflex_upload.state namespace, named by its
	// "backend" key. Default: memory (this process); redis shares it
	// between instances.
	StateRaw json.RawMessage `json:"state,omitempty" caddy:"namespace=http.reflex_upload.state inline_key=backend"`

	failStatus []statusRange
	root       *uploadRoot
	check      filecheck.Rules
	states     tus.States // the state of resumable uploads
	fsync      bool
	files      *fileserver.FileServer
	redirect   time.Duration // storage s3's redirect: how long a presigned URL is valid; 0 serves files through Caddy
	presigner  presigner     // the root's storage, when redirect
	fsName     string        // the key of storedFS in the config's file systems
	ctx        caddy.Context
	logger     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.reflex_upload",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills in the defaults, opens the upload root and sets up serving.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.ctx = ctx
	h.logger = ctx.Logger()

	if h.Root == "" {
		h.Root = os.Getenv(rootEnvVar)
	}
	if h.Root == "" {
		h.Root = defaultRoot
	}
	h.Root = caddy.NewReplacer().ReplaceKnown(h.Root, "")
	if h.Prefix == "" {
		h.Prefix = defaultPrefix
	}
	if h.MaxFieldsSize == 0 {
		h.MaxFieldsSize = defaultMaxFieldsSize
	}
	if h.OnConflict == "" {
		h.OnConflict = conflictOverwrite
	}
	if h.Mode == "" {
		h.Mode = modeStore
	}
	if len(h.ForwardFailStatus) == 0 {
		h.ForwardFailStatus = []string{"4xx", "5xx"}
	}
	if h.Hash == "" {
		h.Hash = hashSHA256
	}
	h.fsync = h.Fsync == nil || *h.Fsync
	if h.Owner == "" {
		h.Owner = defaultOwner
	}
	if h.ProgressRetention == 0 {
		h.ProgressRetention = caddy.Duration(progress.DefaultRetention)
	}
	if h.IdleTimeout == 0 {
		h.IdleTimeout = caddy.Duration(defaultIdleTimeout)
	}
	if h.ChunkExpiry == 0 {
		h.ChunkExpiry = caddy.Duration(defaultChunkExpiry)
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}

	accept, err := filecheck.ParseAccept(h.Accept)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	h.check = filecheck.Rules{MaxSize: h.MaxSize, MinSize: h.MinSize, Accept: accept}
	if h.failStatus, err = parseStatusRanges(h.ForwardFailStatus); err != nil {
		return fmt.Errorf("forward_fail_status: %w", err)
	}

	storage, state, err := h.loadBackends(ctx)
	if err != nil {
		return err
	}
	if h.root, err = openUploadRoot(h.Root, storage, state, StateOptions{Idle: time.Duration(h.ChunkExpiry)}, h.logger); err != nil {
		return err
	}
	h.states = h.root.stored.TusStates(h.fsync)
	h.root.setSweepInterval(time.Duration(h.ChunkExpiry))
	h.root.progress.Configure(time.Duration(h.ProgressRetention), progress.DefaultMaxFinished)

	// The file server reads through storedFS, registered in this config's
	// file systems under a name of this handler's own.
	h.fsName = "reflex_upload " + newID()
	ctx.FileSystems().Register(h.fsName, h.root.files.FS())
	h.files = &fileserver.FileServer{
		FileSystem:    h.fsName,
		Root:          h.root.files.ServeRoot(),
		Hide:          []string{filepath.Join(h.root.files.ServeRoot(), reservedDir)},
		IndexNames:    []string{}, // a folder is never answered with an index file
		CanonicalURIs: new(bool),  // nor redirected: folders are simply not found
	}
	if err := h.files.Provision(ctx); err != nil {
		return fmt.Errorf("provisioning file server: %w", err)
	}
	return h.provisionRedirect(storage)
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if !strings.HasPrefix(h.Prefix, "/") || (h.Prefix != "/" && strings.HasSuffix(h.Prefix, "/")) ||
		path.Clean(h.Prefix) != h.Prefix || strings.ContainsAny(h.Prefix, "{}?#") {
		return fmt.Errorf("prefix: %q must be a clean path that starts with / and has no trailing slash", h.Prefix)
	}
	if h.ProgressRetention < 0 || h.IdleTimeout < 0 || h.ChunkExpiry < 0 {
		return errors.New("progress_retention, idle_timeout and chunk_expiry cannot be negative")
	}
	if h.MaxSize < 0 || h.MinSize < 0 || h.MaxRequestSize < 0 || h.MaxFiles < 0 || h.MaxFieldsSize < 0 {
		return errors.New("max_size, min_size, max_request_size, max_files and max_fields_size cannot be negative")
	}
	if h.MaxSize > 0 && h.MinSize > h.MaxSize {
		return fmt.Errorf("min_size (%d) is larger than max_size (%d)", h.MinSize, h.MaxSize)
	}
	switch h.OnConflict {
	case conflictOverwrite, conflictRename, conflictReject:
	default:
		return fmt.Errorf("on_conflict: %q is not one of overwrite, rename, reject", h.OnConflict)
	}
	switch h.Mode {
	case modeStore, modeForward, modeTrack:
	default:
		return fmt.Errorf("mode: %q is not one of store, forward, track", h.Mode)
	}
	for _, o := range h.CORSOrigins {
		if err := checkOrigin(o); err != nil {
			return fmt.Errorf("cors_origins: %w", err)
		}
		if o == "*" && h.CORSCredentials {
			return errors.New("cors_credentials cannot go with the \"*\" origin")
		}
	}
	switch h.Hash {
	case hashSHA256, hashNone:
	default:
		return fmt.Errorf("hash: %q is not one of sha256, none", h.Hash)
	}
	return nil
}

// Cleanup releases the upload root. When the process exits, it first cuts
// the standard uploads that outlived the grace period.
func (h *Handler) Cleanup() error {
	h.cutStandardUploads()
	if h.fsName != "" {
		h.ctx.FileSystems().Unregister(h.fsName)
	}
	if h.root != nil {
		return h.root.release()
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
