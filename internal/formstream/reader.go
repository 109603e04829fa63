// Package formstream is a fast streaming reader of multipart/form-data
// bodies (RFC 2046, RFC 7578), meant to replace the part reader of
// mime/multipart where large files are uploaded.
//
// The body is read into a small buffer (a few KiB) while it arrives
// slowly, and into buffers borrowed from a pool (internal/bufpool) while
// it arrives fast: a read that fills its buffer moves the reader one size
// up (64 KiB, then the large buffer, 1 MiB by default), and the borrowed
// buffer is given back as soon as a read comes back short, when the reader
// ends, or on [Reader.Release]. A reader that waits for the network thus
// holds only its small buffer. The end of a part's data is found by a sampling search that looks at 2 of every
// len(boundary)+3 bytes (falling back to bytes.Index on data made of the
// delimiter's bytes), and the data is handed out as slices of that buffer
// ([Part.Chunk], [Part.WriteTo]) with no per-byte work and no allocation per
// chunk.
//
// # Semantics
//
// On every body that browsers, curl, Python requests or mime/multipart's
// Writer produce, a Reader gives the same parts as mime/multipart's
// Reader.NextRawPart (headers, data; Content-Transfer-Encoding is never
// decoded):
//
//   - The preamble (the lines before the first delimiter line) is ignored.
//     A delimiter line is "--" + boundary, optional spaces and tabs
//     (transport padding), then CRLF; the first one may start the body. A
//     preamble line longer than 4096 bytes is an error, as in mime/multipart.
//   - A part's data ends at CRLF + "--" + boundary when the byte after it is
//     a space, tab, CR or LF, or the two bytes after it are "--" (the close
//     delimiter); such a match must then be a proper delimiter line or the
//     body is malformed. Followed by anything else, the match is part data.
//     Like mime/multipart, "--" + boundary at the very start of a part's data
//     (right after the blank line that ends its header) also ends the part.
//   - After the close delimiter "--" + boundary + "--", optional spaces and
//     tabs, then CRLF or the end of the body, [Reader.NextPart] returns
//     io.EOF; the epilogue is never read.
//   - Part headers are parsed like net/textproto: canonical keys (keys
//     containing a space are kept as sent), leading white space of values
//     dropped, trailing white space trimmed, obsolete line folding
//     (continuation lines starting with a space or tab) joined with a single
//     space, and the same bytes refused in keys and values.
//
// # Stricter than mime/multipart
//
// These bodies are refused with an error although mime/multipart accepts
// them:
//
//   - A boundary longer than 70 bytes (RFC 2046's limit) or that contains
//     CR or LF: [ErrInvalidBoundary] (also given for an empty boundary,
//     which mime/multipart refuses too).
//   - Bare LF line endings: a first delimiter line ending in LF alone (which
//     switches mime/multipart to LF mode), or a part header line ending in LF
//     alone: [ErrMalformed].
//   - More than [MaxPadding] spaces and tabs after the boundary in a line
//     that starts with "--" + boundary: [ErrMalformed].
//   - A body that ends inside a part's header block: an error wrapping
//     io.ErrUnexpectedEOF (mime/multipart returns io.EOF, as if the body
//     were complete).
//   - A part header block (header lines with their CRLFs plus the blank
//     line) longer than [MaxHeaderBytes], or with more than [MaxHeaderLines]
//     lines: [ErrHeaderTooLarge].
//
// Strictness only ever means an error, never different data.
package formstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/reflexupload/caddy-reflex-upload/internal/bufpool"
)

// Limits and defaults.
const (
	// DefaultBufferSize is the size of the large buffer NewReader uses when
	// asked for bufSize <= 0.
	DefaultBufferSize = 1 << 20

	// SmallBufferSize is the size of the buffer a Reader keeps for itself
	// and reads into while the body arrives slowly: bufpool.Small and room
	// for what stays unread between reads in part data (a tail shorter
	// than the delimiter), so that a read still goes straight to the
	// socket rather than through net/http's 4 KiB connection reader.
	SmallBufferSize = bufpool.Small + 128

	// MaxHeaderBytes is the most bytes a part's header block may take,
	// counting every header line with its CRLF and the blank line that ends
	// the block.
	MaxHeaderBytes = 16 << 10

	// MaxHeaderLines is the most lines (continuation lines included) a
	// part's header block may have, not counting the blank line.
	MaxHeaderLines = 100

	// MaxPadding is the most spaces and tabs allowed after the boundary in a
	// delimiter line.
	MaxPadding = 1024

	// MaxBoundaryLen is the longest boundary accepted (RFC 2046).
	MaxBoundaryLen = 70

	// maxPreambleLine is mime/multipart's limit on a line before the first
	// delimiter (its bufio.Reader size).
	maxPreambleLine = 4096
)

// Errors. Errors about the body wrap one of these (use errors.Is); a body
// that ends before its close delimiter gives an error wrapping
// io.ErrUnexpectedEOF; an error of the underlying reader is returned as it
// is.
var (
	// ErrMalformed is wrapped by the errors about a body that does not
	// follow the multipart syntax.
	ErrMalformed = errors.New("formstream: malformed multipart body")

	// ErrHeaderTooLarge is wrapped by the error about a part header block
	// over MaxHeaderBytes or MaxHeaderLines.
	ErrHeaderTooLarge = errors.New("formstream: part header too large")

	// ErrInvalidBoundary is wrapped by the error every call gives when the
	// boundary is empty, longer than MaxBoundaryLen or contains CR or LF.
	ErrInvalidBoundary = errors.New("formstream: invalid boundary")
)

// strictKind says which documented stricter-than-mime/multipart rule an
// error comes from (used by the tests to check that every such error is one
// of the documented cases).
type strictKind uint8

const (
	notStrict       strictKind = iota
	strictBoundary             // invalid boundary
	strictBareLF               // off is the offset of the bare LF
	strictPadding              // off is the offset of the padding
	strictHeader               // off is the offset of the header block
	strictHeaderEOF            // off is the offset of the header block
)

// bodyError is the error about the body: kind is one of the sentinel errors
// or io.ErrUnexpectedEOF; off is the body offset it was found at.
type bodyError struct {
	kind   error
	off    int64
	msg    string
	strict strictKind
}

func (e *bodyError) Error() string {
	if e.kind == io.ErrUnexpectedEOF {
		return fmt.Sprintf("formstream: unexpected EOF %s (body offset %d)", e.msg, e.off)
	}
	return fmt.Sprintf("%v: %s (body offset %d)", e.kind, e.msg, e.off)
}

func (e *bodyError) Unwrap() error { return e.kind }

// errBadRead reports an io.Reader returning an impossible count.
var errBadRead = errors.New("formstream: underlying reader returned an invalid count")

// A Reader reads the parts of a multipart body one after the other.
// It is not safe for concurrent use.
type Reader struct {
	src    io.Reader
	srcErr error // first error of src; src is not read after it

	buf  []byte
	r, w int   // unread bytes are buf[r:w]
	base int64 // body offset of buf[0]

	small     []byte  // the Reader's own buffer
	held      *[]byte // a pooled buffer, held while the body arrives fast; nil otherwise
	level     int     // 0: small buffer; 1: bufpool.Medium; 2: large buffer (see bufpool.LevelSize)
	largeSize int
	filled    bool // the last read filled the room it was given
	grown     bool // grow moved to a bigger buffer since the last read

	dashBoundary   []byte // "--" + boundary
	nlDashBoundary []byte // "\r\n--" + boundary
	find           finder // searches for nlDashBoundary

	maxHeaderBytes int
	maxHeaderLines int
	maxPadding     int

	err error // sticky: io.EOF after the close delimiter, or the first error
	cur *Part // the part whose data is being read

	// Scanning state of cur's data.
	pend      int  // buf[r:r+pend] is data of cur
	atStart   bool // no data of cur confirmed yet: a bare "--boundary" may end it
	delim     bool // buf[r+pend:] starts with the delimiter that ends cur
	delimSkip int  // bytes before "--boundary" in that delimiter (2 or 0)
}

// NewReader returns a Reader of the multipart body r whose boundary is
// boundary (the boundary parameter of the Content-Type, without the
// leading "--"). bufSize is the size of the large buffer the body is read
// into while it arrives fast; bufSize <= 0 means DefaultBufferSize
// (1 MiB). It is raised to a minimum that fits the delimiter and header
// limits (a little over MaxHeaderBytes). The Reader's own buffer is
// SmallBufferSize bytes.
//
// The large buffer is borrowed from a pool and given back when the Reader
// returns an error or io.EOF from NextPart; a caller that stops reading
// before that should call Release.
//
// An invalid boundary is reported by the first call to NextPart.
func NewReader(r io.Reader, boundary string, bufSize int) *Reader {
	return newReader(r, boundary, bufSize, MaxHeaderBytes, MaxHeaderLines, MaxPadding)
}

// newReader is NewReader with the limits as parameters (the tests use small
// ones to get small buffers).
func newReader(src io.Reader, boundary string, bufSize, maxHeaderBytes, maxHeaderLines, maxPadding int) *Reader {
	return newReaderSmall(src, boundary, bufSize, SmallBufferSize, maxHeaderBytes, maxHeaderLines, maxPadding)
}

// newReaderSmall is newReader with the small buffer's size as a parameter
// (the tests use tiny ones to move between the buffers often).
func newReaderSmall(src io.Reader, boundary string, bufSize, smallSize, maxHeaderBytes, maxHeaderLines, maxPadding int) *Reader {
	rd := &Reader{
		src:            src,
		maxHeaderBytes: maxHeaderBytes,
		maxHeaderLines: maxHeaderLines,
		maxPadding:     maxPadding,
	}
	if msg := checkBoundary(boundary); msg != "" {
		rd.err = &bodyError{kind: ErrInvalidBoundary, msg: msg, strict: strictBoundary}
		return rd
	}
	if bufSize <= 0 {
		bufSize = DefaultBufferSize
	}
	if m := minBufSize(maxHeaderBytes, maxPadding); bufSize < m {
		bufSize = m
	}
	rd.largeSize = bufSize
	rd.small = make([]byte, max(min(smallSize, bufSize), 1))
	rd.buf = rd.small
	d := []byte("\r\n--" + boundary)
	rd.nlDashBoundary = d
	rd.dashBoundary = d[2:]
	rd.find.init(d)
	return rd
}

// minBufSize is the smallest buffer that holds a whole header block and a
// whole delimiter line with its longest padding, with room to spare.
func minBufSize(maxHeaderBytes, maxPadding int) int {
	delimLine := len("\r\n--") + MaxBoundaryLen + len("--") + maxPadding + len("\r\n") + 1
	return max(maxHeaderBytes, delimLine) + 2*delimLine
}

// checkBoundary returns why boundary cannot be used, or "".
func checkBoundary(boundary string) string {
	switch {
	case boundary == "":
		return "empty boundary"
	case len(boundary) > MaxBoundaryLen:
		return fmt.Sprintf("boundary longer than %d bytes", MaxBoundaryLen)
	}
	for i := 0; i < len(boundary); i++ {
		if boundary[i] == '\r' || boundary[i] == '\n' {
			return "boundary contains CR or LF"
		}
	}
	return ""
}

// Line verdicts of classify.
const (
	lineNeedMore = iota // more input is needed to tell
	lineOther           // not a delimiter line
	lineDelim           // a delimiter line: a part follows
	lineClose           // the close delimiter line
)

// classify looks at the line that starts at buf[rd.r] and tells whether it
// is a delimiter line, the close delimiter line, another line, or whether
// more input is needed. For a delimiter line, n is its length with its CRLF.
// In the preamble, a delimiter line ending in a bare LF is an error.
func (rd *Reader) classify(preamble bool) (verdict, n int, err error) {
	b := rd.buf[rd.r:rd.w]
	eof := rd.srcErr == io.EOF
	db := rd.dashBoundary
	if len(b) < len(db) {
		if eof || !bytes.HasPrefix(db, b) {
			return lineOther, 0, nil
		}
		return lineNeedMore, 0, nil
	}
	if !bytes.HasPrefix(b, db) {
		return lineOther, 0, nil
	}
	i := len(db)
	final := false
	if i < len(b) && b[i] == '-' {
		if i+1 == len(b) {
			if eof {
				return lineOther, 0, nil
			}
			return lineNeedMore, 0, nil
		}
		if b[i+1] != '-' {
			return lineOther, 0, nil
		}
		final = true
		i += 2
	}
	pad := i
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	if i-pad > rd.maxPadding {
		return 0, 0, rd.errAt(ErrMalformed, rd.r+pad, strictPadding, "more than %d bytes of padding after the boundary", rd.maxPadding)
	}
	if i == len(b) {
		switch {
		case !eof:
			return lineNeedMore, 0, nil
		case final:
			return lineClose, i, nil
		}
		return lineOther, 0, nil
	}
	switch b[i] {
	case '\r':
		if i+1 == len(b) {
			if eof {
				return lineOther, 0, nil
			}
			return lineNeedMore, 0, nil
		}
		if b[i+1] == '\n' {
			if final {
				return lineClose, i + 2, nil
			}
			return lineDelim, i + 2, nil
		}
	case '\n':
		if preamble && !final {
			return 0, 0, rd.errAt(ErrMalformed, rd.r+i, strictBareLF, "delimiter line ends in a bare LF")
		}
	}
	return lineOther, 0, nil
}

// NextPart skips whatever is left of the current part and returns the next
// one. It returns io.EOF after the close delimiter. Any other error means
// the body is malformed (ErrMalformed, ErrHeaderTooLarge, ErrInvalidBoundary
// wrapped), truncated (an error wrapping io.ErrUnexpectedEOF), or that the
// underlying reader failed (its error, as it is). Errors are sticky.
func (rd *Reader) NextPart() (*Part, error) {
	if rd.err != nil {
		return nil, rd.err
	}
	if p := rd.cur; p != nil {
		for {
			_, err := p.next(false, math.MaxInt)
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		rd.cur = nil
		rd.r += rd.delimSkip
		return rd.afterPart()
	}
	return rd.preamble()
}

// preamble skips the lines before the first delimiter line and reads the
// first part.
func (rd *Reader) preamble() (*Part, error) {
	lineLen := 0 // bytes of the current line already skipped
	for {
		if lineLen == 0 {
			v, n, err := rd.classify(true)
			if err != nil {
				return nil, rd.fail(err)
			}
			switch v {
			case lineNeedMore:
				if !rd.more() && rd.srcErr != io.EOF {
					return nil, rd.fail(rd.inputErr("the preamble"))
				}
				continue
			case lineDelim:
				rd.r += n
				return rd.readPart()
			case lineClose:
				return rd.finish()
			}
		}
		// Skip the rest of the line.
		b := rd.buf[rd.r:rd.w]
		if lim := maxPreambleLine - lineLen; len(b) > lim {
			b = b[:lim]
		}
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			rd.r += i + 1
			lineLen = 0
			continue
		}
		rd.r += len(b)
		lineLen += len(b)
		if lineLen >= maxPreambleLine {
			return nil, rd.fail(rd.errAt(ErrMalformed, rd.r, notStrict, "preamble line longer than %d bytes", maxPreambleLine))
		}
		if !rd.more() {
			return nil, rd.fail(rd.inputErr("the preamble"))
		}
	}
}

// afterPart reads the delimiter line after a part's data, and the next part.
func (rd *Reader) afterPart() (*Part, error) {
	for {
		v, n, err := rd.classify(false)
		if err != nil {
			return nil, rd.fail(err)
		}
		switch v {
		case lineNeedMore:
			if !rd.more() && rd.srcErr != io.EOF {
				return nil, rd.fail(rd.inputErr("a delimiter line"))
			}
		case lineDelim:
			rd.r += n
			return rd.readPart()
		case lineClose:
			return rd.finish()
		default:
			if rd.srcErr == io.EOF && !bytes.Contains(rd.buf[rd.r:rd.w], []byte{'\n'}) {
				return nil, rd.fail(rd.inputErr("a delimiter line"))
			}
			return nil, rd.fail(rd.errAt(ErrMalformed, rd.r, notStrict, "bad delimiter line"))
		}
	}
}

// readPart reads a part's header block, which starts at buf[rd.r].
func (rd *Reader) readPart() (*Part, error) {
	pos, lines := 0, 0 // offset from rd.r of the next line; lines so far
	for {
		b := rd.buf[rd.r+pos : rd.w]
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if rd.w-rd.r >= rd.maxHeaderBytes {
				return nil, rd.fail(rd.errAt(ErrHeaderTooLarge, rd.r, strictHeader, "header block over %d bytes", rd.maxHeaderBytes))
			}
			if !rd.more() {
				if rd.srcErr == io.EOF {
					// mime/multipart takes this for the end of the body.
					return nil, rd.fail(rd.errAt(io.ErrUnexpectedEOF, rd.r, strictHeaderEOF, "in a part header"))
				}
				return nil, rd.fail(rd.inputErr("a part header"))
			}
			continue
		}
		end := pos + i + 1
		if end > rd.maxHeaderBytes {
			return nil, rd.fail(rd.errAt(ErrHeaderTooLarge, rd.r, strictHeader, "header block over %d bytes", rd.maxHeaderBytes))
		}
		if i == 0 || b[i-1] != '\r' {
			return nil, rd.fail(rd.errAt(ErrMalformed, rd.r+pos+i, strictBareLF, "header line ends in a bare LF"))
		}
		if i == 1 {
			h, err := parseHeader(rd.buf[rd.r : rd.r+pos])
			if err != nil {
				return nil, rd.fail(rd.errAt(ErrMalformed, rd.r, notStrict, "%s", err))
			}
			rd.r += end
			p := &Part{Header: h, mr: rd}
			rd.cur = p
			rd.pend, rd.atStart, rd.delim, rd.delimSkip = 0, true, false, 0
			return p, nil
		}
		lines++
		if lines > rd.maxHeaderLines {
			return nil, rd.fail(rd.errAt(ErrHeaderTooLarge, rd.r, strictHeader, "more than %d header lines", rd.maxHeaderLines))
		}
		pos = end
	}
}
