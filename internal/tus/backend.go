package tus

import (
	"context"
	"errors"
	"io"
	"strings"
)

// ErrUnsupported is returned by a backend that cannot hold resumable
// uploads at all: the protocol answers that clearly instead of failing.
var ErrUnsupported = errors.New("resumable uploads are not supported by this storage")

// ErrStale is returned by a backend shared by several processes when the
// upload's state changed since this writer loaded it (another writer
// saved meanwhile): nothing of this write counts, and the client resumes
// from the state saved.
var ErrStale = errors.New("the upload was written by another request meanwhile")

// ErrLost is returned by Load when the upload's data no longer matches its
// state (a stale writer replaced committed bytes): the upload cannot go on
// and is removed; the client starts again.
var ErrLost = errors.New("the upload's data was lost")

// A backend holds resumable uploads for the protocol: their bytes (Data)
// and their state (States). What it cannot do is an optional interface it
// does not implement; Extensions tells clients what remains.

// Data holds the bytes of resumable uploads, each named by its id.
type Data interface {
	// Create makes the empty data of a new upload; an id that exists is
	// an error.
	Create(ctx context.Context, id string) error
	// Append opens the data of upload id for writing at offset. Bytes past
	// offset were never confirmed (a crash, a discarded chunk) and are
	// dropped.
	Append(ctx context.Context, id string, offset int64) (Appender, error)
	// ReadHead reads the first bytes of upload id into p (as io.ReadFull;
	// io.EOF and io.ErrUnexpectedEOF are not errors here).
	ReadHead(ctx context.Context, id string, p []byte) (int, error)
	// Remove removes the data of upload id (termination, expiry, or once
	// published); no data is not an error.
	Remove(ctx context.Context, id string) error
}

// A NamedData can keep an upload's data where the file is published, so
// that publishing it moves no bytes (S3: the multipart upload is made
// under the file's name and completed in place, with no copy).
type NamedData interface {
	// CreateAs is Create for an upload that is published under name or
	// not at all (its conflict policy keeps names: overwrite, reject).
	CreateAs(ctx context.Context, id, name string) error
}

// An Appender writes at the end of an upload's data.
type Appender interface {
	io.Writer
	// Sync makes what was written durable, before the Info that counts it
	// is saved.
	Sync() error
	// Close ends the writing; its error carries write errors.
	Close() error
}

// A Reader can read an upload's data back: what concatenation needs.
type Reader interface {
	Open(ctx context.Context, id string) (io.ReadCloser, error)
}

// A LengthDeferrer takes uploads whose length is declared later
// (creation-defer-length): DeclareLength is told the length once a request
// declares it, before the Info that holds it is saved.
type LengthDeferrer interface {
	DeclareLength(ctx context.Context, id string, length int64) error
}

// States holds the Info of resumable uploads. Save is atomic: a Load sees
// the Info before it or after it, never a part.
type States interface {
	// Load reads upload id's Info; an error wrapping fs.ErrNotExist when
	// there is none.
	Load(ctx context.Context, id string) (*Info, error)
	Save(ctx context.Context, info *Info) error
	// Delete removes upload id's Info; none is not an error.
	Delete(ctx context.Context, id string) error
	// List gives the ids of the uploads that have an Info.
	List(ctx context.Context) ([]string, error)
}

// The extensions of the protocol: the first ones every backend has, the
// last two depend on it.
const (
	extDeferLength = "creation-defer-length"
	extConcat      = "concatenation"
)

// Extensions is the Tus-Extension header for a backend's data.
func Extensions(d Data) string {
	ext := []string{"creation", "creation-with-upload"}
	if _, ok := d.(LengthDeferrer); ok {
		ext = append(ext, extDeferLength)
	}
	ext = append(ext, "termination", "expiration", "checksum")
	if _, ok := d.(Reader); ok {
		ext = append(ext, extConcat)
	}
	return strings.Join(ext, ",")
}
