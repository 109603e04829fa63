// Package store keeps uploaded files: the Store interface that the upload
// handlers write through, and Local, its implementation on a folder opened
// as an os.Root (so that no name reaches outside it). A file becomes
// visible only complete: it is written to a temp place, then published
// under a name by a Batch, all or none, under a conflict policy. Local
// holds the data and state of resumable uploads too (it implements
// tus.Data, tus.Reader and, per fsync setting, tus.States), beside the
// files they are published as.
package store

import (
	"context"
	"io"
	"io/fs"
)

// Private is the store's private folder at the top of the upload root:
// temp files and resumable uploads. No stored name may start with it
// (names.Sanitize refuses it) and it is never served.
const Private = ".uploads"

// Policy is what a new file does to a stored one of the same name.
type Policy string

// The conflict policies.
const (
	Overwrite Policy = "overwrite" // replace it atomically
	Rename    Policy = "rename"    // store the new one as "name (1).ext"
	Reject    Policy = "reject"    // refuse the new one
)

// A Store keeps the uploaded files.
type Store interface {
	// CreateTemp makes a new, empty temp file that nobody sees until a
	// Batch publishes it; Temp.Name is the name to give Put and
	// RemoveTemp.
	CreateTemp(ctx context.Context) (Temp, error)
	// RemoveTemp removes a temp file (none: not an error).
	RemoveTemp(name string)
	// Exists reports whether something is stored at name: the early check
	// of the reject policy (Batch.Put checks again, conditionally).
	Exists(ctx context.Context, name string) bool
	// NewBatch starts publishing the files of one request under policy,
	// all or none; with fsync a published file survives a crash.
	NewBatch(policy Policy, fsync bool) Publisher
	// FS is what Caddy's file server reads stored files from; it names a
	// file by ServeRoot joined with its stored name. The private folder,
	// and anything that leads outside the store, is not found.
	FS() fs.StatFS
	ServeRoot() string
}

// A TempsByName is a Store that can write a temp file under the name it
// will be published at, when the caller knows it already (the overwrite
// and reject policies keep the name). The temp stays invisible until its
// Batch publishes it, as any other; a Store that cannot rename (S3) then
// publishes it where it is, instead of copying it from a temp place.
type TempsByName interface {
	// CreateTempAs is CreateTemp for a temp that is published under
	// name, and under no other.
	CreateTempAs(ctx context.Context, name string) (Temp, error)
}

// A Temp is a file being written before it is published.
type Temp interface {
	io.Writer
	Name() string
	Sync() error
	Close() error
}

// A Publisher moves the files of one request into place under a conflict
// policy, all or none.
type Publisher interface {
	// Plan decides where each of names goes, or refuses the batch with the
	// index of the first name in conflict (an error wrapping fs.ErrExist,
	// or a folder in the way).
	Plan(names []string) (int, error)
	// Put publishes tmp as the i-th name of the plan and gives the name it
	// was stored at (under rename, the next free one when another request
	// took the planned one). tmp names a temp file of the store
	// (Temp.Name) or the data of a complete resumable upload it holds
	// (Local: TusData). A reader sees the old file or the new one, never a
	// part; under reject and rename the write is conditional (it never
	// replaces a file).
	Put(i int, tmp string) (string, error)
	// Undo takes back what the batch did until Keep: files it stored are
	// removed, files it replaced come back.
	Undo()
	// Keep makes the batch final.
	Keep()
}

var (
	_ Store     = (*Local)(nil)
	_ Publisher = (*Batch)(nil)
)
