// Package progress is the registry of uploads in flight and recently
// finished: what GET {prefix}/.uploads/{id} reads (JSON and server-sent
// events) and what DELETE {prefix}/.uploads/{id} cancels, for standard
// (multipart) and resumable (tus) uploads alike.
//
// An upload is named by its Key: the owner value of its requests and its
// id, so that uploads of different owners never see each other. A request
// that receives an upload Starts it (a standard upload: an id in flight is
// refused) or Attaches to it (a resumable upload spans many requests), and
// holds an Upload: the byte counter its body reads move on, the Cancelled
// signal it selects on, and Finish. Finished uploads stay readable for the
// retention time, at most MaxFinished of them (the oldest go first).
//
// Memory is the implementation for one process. A shared implementation
// (Redis) lives in its own package; both pass the contract tests of package
// progresstest.
package progress

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"
)

// Upload states, as nginx-upload-progress names them.
const (
	StateStarting  = "starting" // not seen (yet), or forgotten
	StateUploading = "uploading"
	StateDone      = "done"
	StateError     = "error"
	StateCancelled = "cancelled"
)

// Kinds of upload.
const (
	KindMultipart = "multipart"
	KindTus       = "tus"
)

// Defaults of the registry's limits.
const (
	DefaultRetention   = 60 * time.Second
	DefaultMaxFinished = 10000
)

var (
	// ErrIDInUse is what Start returns for a key with an upload in flight.
	ErrIDInUse = errors.New("upload id is in use by an upload in flight")
	// ErrNotFound is what Cancel returns for a key with no upload, or one
	// forgotten.
	ErrNotFound = errors.New("no upload has this id")
	// ErrFinished is what Cancel returns for an upload that has finished.
	ErrFinished = errors.New("the upload has finished already")
	// ErrCancelled is the cause with which Cancel ends the context of the
	// requests receiving the upload (through their Begin.Cancel).
	ErrCancelled = errors.New("upload cancelled")
)

// Key names an upload: its owner value and its id. The zero Owner is an
// upload made without an owner value (then the id is the only secret).
type Key struct {
	Owner string
	ID    string
}

// Begin describes the request that starts or attaches to an upload.
type Begin struct {
	// Kind is KindMultipart or KindTus.
	Kind string
	// Size is the upload's size in bytes, -1 when unknown.
	Size int64
	// Counter is the count of bytes received, which the request's body
	// reads move on (atomically); progress reads it live. Nil: the
	// registry makes one. An Attach that joins an upload in flight in this
	// process returns that upload's counter instead (Upload.Counter), which
	// the request must use from then on.
	Counter *atomic.Int64
	// Cancel ends the request's context; Cancel of the upload calls it with
	// ErrCancelled. It must not block. Nil: only the Cancelled signal.
	Cancel context.CancelCauseFunc
}

// End is how an upload ended.
type End struct {
	// State is StateDone, StateError or StateCancelled.
	State string
	// Status and Code are the HTTP status and error code the client got,
	// on error and cancel.
	Status int
	Code   string
	// Files is the JSON of the stored files (on done), given back as is by
	// Snapshot.Files; nil or "null" for none. The registry does not look
	// into it: the root marshals its own file type.
	Files json.RawMessage
}

// Snapshot is an upload's progress as GET {prefix}/.uploads/{id} answers
// it: a superset of nginx-upload-progress. Its JSON is the wire format.
type Snapshot struct {
	ID       string `json:"id"`
	Kind     string `json:"kind,omitempty"`
	State    string `json:"state"`
	Received int64  `json:"received"`
	// Size is the upload's size, when known.
	Size *int64 `json:"size,omitempty"`
	// Speed is in bytes per second, averaged since the upload started.
	Speed     int64      `json:"speed"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	// Status and Code are the HTTP status and error code the client got,
	// on error and cancelled.
	Status int    `json:"status,omitempty"`
	Code   string `json:"code,omitempty"`
	// Files is End.Files of a finished upload, as given.
	Files json.RawMessage `json:"files,omitempty"`
}

// Final reports whether state is the last one of an upload.
func Final(state string) bool {
	return state == StateDone || state == StateError || state == StateCancelled
}

// A Registry holds the uploads in flight and those finished within the
// retention time, with bounded memory.
type Registry interface {
	// Start registers an upload in flight under key for the request that
	// receives it. It returns ErrIDInUse when an upload is in flight
	// under key; a finished one is replaced.
	Start(ctx context.Context, key Key, b Begin) (Upload, error)
	// Attach joins the upload in flight under key (a resumable upload
	// spans many requests), or registers one as Start does. An upload of
	// another kind in flight under key is left alone: the Upload returned
	// then records nothing (its Finish does nothing).
	Attach(ctx context.Context, key Key, b Begin) (Upload, error)
	// Lookup describes the upload under key; false when there is none (or
	// it was forgotten): the caller answers "starting".
	Lookup(ctx context.Context, key Key) (Snapshot, bool, error)
	// Watch returns a channel closed at the next change of the upload
	// under key (start, finish, cancel), or earlier: a wake may be
	// spurious, and a shared registry may miss one, so a watcher also
	// looks at the count on a ticker. stop releases the watch; call it
	// when done with the channel.
	Watch(key Key) (changed <-chan struct{}, stop func())
	// Cancel asks the upload in flight under key to stop, wherever its
	// requests are: Cancelled is closed and each request's Begin.Cancel is
	// called with ErrCancelled. The upload itself finishes (as cancelled)
	// when its request has cleaned up; Cancel does not wait. It returns
	// ErrNotFound for no upload and ErrFinished for a finished one.
	Cancel(ctx context.Context, key Key) error
	// Expire ends, as expired (error, 410 upload-expired), the resumable
	// uploads in flight under id, of any owner: uploads nobody finished.
	Expire(ctx context.Context, id string) error
	// Local returns the uploads of kind that requests of this process are
	// receiving now (to stop them at exit).
	Local(kind string) []Upload
	// Configure sets the retention and the cap of finished uploads (zero:
	// the defaults).
	Configure(retention time.Duration, maxFinished int)
	// Close ends the registry's background work.
	Close() error
}

// An Upload is one request's part in an upload in flight. Every Upload
// that Start or Attach returns ends with Finish or Leave: until then a
// shared registry keeps renewing the upload's record for the request.
type Upload interface {
	Key() Key
	Kind() string
	// Counter is the count of bytes received that the request moves on.
	Counter() *atomic.Int64
	// Cancelled is closed once a Cancel reached the upload.
	Cancelled() <-chan struct{}
	// Done is closed once the upload has finished (by a request of this
	// process, or by Expire) and no longer counts as in flight here.
	Done() <-chan struct{}
	// Stop calls the request's Begin.Cancel with cause (shutdown).
	Stop(cause error)
	// Leave ends the request's part; the upload stays in flight (a
	// resumable upload between requests). Finish after Leave does nothing.
	Leave()
	// Finish records how the upload ended, with the bytes received frozen
	// at the counter's value, and ends the request's part. The first end
	// counts: an upload that has ended already (expired meanwhile) is left
	// as it is. It records the end even when ctx has ended already (the
	// context of a cancelled request): only ctx's values are used.
	Finish(ctx context.Context, end End) error
}

// Speed is bytes per second over the time from start to end.
func Speed(received int64, start, end time.Time) int64 {
	if secs := end.Sub(start).Seconds(); secs > 0 {
		return int64(float64(received) / secs)
	}
	return 0
}

// FilesOf drops an empty or null files JSON.
func FilesOf(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}
