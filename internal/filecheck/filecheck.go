// Package filecheck applies the per-file limits of an upload (max_size,
// min_size and accept) to a file's bytes as they go by, before they are
// kept. Standard uploads, track mode, tus appends and tus concatenation all
// check a file with the same Check.
package filecheck

import (
	"errors"
	"fmt"

	"github.com/gabriel-vasile/mimetype"
)

// Kinds of refusal; an *Error wraps one of them (errors.Is).
var (
	ErrTooLarge = errors.New("file too large")
	ErrTooSmall = errors.New("file too small")
	ErrType     = errors.New("file type not accepted")
)

// An Error is a file refused by a check. Its message is meant for the
// client.
type Error struct {
	Kind error // ErrTooLarge, ErrTooSmall or ErrType
	msg  string
	err  error
}

func (e *Error) Error() string        { return e.msg }
func (e *Error) Is(target error) bool { return target == e.Kind }
func (e *Error) Unwrap() error        { return e.err }

// Rules are the per-file limits of an upload.
type Rules struct {
	// MaxSize is the largest file in bytes; 0 means no limit.
	MaxSize int64
	// MinSize is the smallest file in bytes; 0 means no minimum.
	MinSize int64
	// Accept is the accepted types; see ParseAccept.
	Accept Accept
}

// CheckName checks what is known of a file before its bytes: its name (a
// sanitised path) and its declared type. A resumable upload is checked on
// it at creation.
func (r *Rules) CheckName(name, declared string) error {
	if err := r.Accept.checkName(name, declared); err != nil {
		return typeError(err)
	}
	return nil
}

// New starts the check of a file: name is its sanitised path (for the type
// of its extension), declared the type its client gave.
func (r *Rules) New(name, declared string) *Check {
	return &Check{r: r, name: name, declared: declared, types: true, head: make([]byte, 0, SniffLen)}
}

// Resume continues the check of a file whose first size bytes were checked
// already (a resumable upload, at a later request). contentType is the type
// found when the file was sniffed, or "" when it was not yet: then head is
// its first bytes (at most SniffLen; fewer than SniffLen only when size is),
// and when head is full the file is sniffed at once.
func (r *Rules) Resume(name, declared string, size int64, head []byte, contentType string) (*Check, error) {
	c := &Check{r: r, name: name, declared: declared, types: true, size: size, ctype: contentType}
	if contentType != "" {
		c.sniffed = true
		return c, nil
	}
	c.head = append(make([]byte, 0, SniffLen), head[:min(len(head), SniffLen)]...)
	if len(c.head) == SniffLen {
		return c, c.Sniff()
	}
	return c, nil
}

// SizeOnly starts a check of the size alone from size bytes: a tus partial
// upload, whose type is checked as part of its final upload.
func (r *Rules) SizeOnly(size int64) *Check {
	return &Check{r: r, size: size}
}

// A Check follows one file's bytes: the size against MaxSize and the first
// bytes against Accept before the bytes are kept, and MinSize at the end.
type Check struct {
	r        *Rules
	name     string
	declared string
	types    bool // the type is checked (not a partial upload)
	size     int64
	head     []byte
	sniffed  bool
	ctype    string
}

// Write checks the next bytes of the file.
func (c *Check) Write(p []byte) error {
	if max := c.r.MaxSize; max > 0 && c.size+int64(len(p)) > max {
		return &Error{Kind: ErrTooLarge, msg: fmt.Sprintf("file is larger than %d bytes", max)}
	}
	c.size += int64(len(p))
	if c.types && !c.sniffed {
		c.head = append(c.head, p[:min(len(p), SniffLen-len(c.head))]...)
		if len(c.head) == SniffLen {
			return c.Sniff()
		}
	}
	return nil
}

// Sniff tells the type from the bytes seen so far and checks it against
// Accept, unless that was done: the end of a file shorter than SniffLen.
func (c *Check) Sniff() error {
	if !c.types || c.sniffed {
		return nil
	}
	m := mimetype.Detect(c.head)
	c.head = nil // not needed any more; a slow upload should not keep it
	if err := c.r.Accept.check(c.name, c.declared, m); err != nil {
		return typeError(err)
	}
	c.sniffed, c.ctype = true, m.String()
	return nil
}

// End checks what only the end tells: the type of a file shorter than the
// sniffing window, and MinSize.
func (c *Check) End() error {
	if err := c.Sniff(); err != nil {
		return err
	}
	return c.r.CheckMin(c.size)
}

// CheckMin checks a finished file's size against MinSize.
func (r *Rules) CheckMin(size int64) error {
	if size < r.MinSize {
		return &Error{Kind: ErrTooSmall, msg: fmt.Sprintf("file is smaller than %d bytes", r.MinSize)}
	}
	return nil
}

// Size is how many bytes were checked.
func (c *Check) Size() int64 { return c.size }

// Sniffed reports whether the type was told and accepted.
func (c *Check) Sniffed() bool { return c.sniffed }

// ContentType is the sniffed type, once Sniffed.
func (c *Check) ContentType() string { return c.ctype }

func typeError(err error) error {
	return &Error{Kind: ErrType, msg: "file type is not accepted: " + err.Error(), err: err}
}
