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
	"mime"
	"net/textproto"

	"github.com/reflexupload/caddy-reflex-upload/internal/bufpool"
)

// Limits and defaults.
const (
	// DefaultBufferSize is the size of the large buffer NewReader uses when
	// asked for bufSize <= 0.
	DefaultBufferSize = 1 << 20

	// SmallBufferSize is the size of the buffer a Reader keeps for itself
	// and reads into while the body arrives slowly.
	SmallBufferSize = bufpool.Small

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

// fail makes err the sticky error and returns it.
func (rd *Reader) fail(err error) error {
	rd.err = err
	rd.dropBuffers()
	return err
}

// finish makes io.EOF the sticky error after the close delimiter.
func (rd *Reader) finish() (*Part, error) {
	rd.err = io.EOF
	rd.dropBuffers()
	return nil, io.EOF
}

// dropBuffers gives back the large buffer once nothing will be read any
// more.
func (rd *Reader) dropBuffers() {
	rd.buf, rd.r, rd.w = rd.small[:0], 0, 0
	bufpool.Put(rd.held)
	rd.held, rd.level = nil, 0
}

// Release gives back the large buffer the Reader may hold. The Reader
// cannot be used after it: its methods return an error. Release may be
// called more than once, and after the Reader has ended.
func (rd *Reader) Release() {
	if rd.err == nil {
		rd.err = errReleased
	}
	rd.dropBuffers()
}

// errReleased is the error of a Reader used after Release.
var errReleased = errors.New("formstream: reader released")

// grow moves the unread bytes into a buffer one size up, if there is one
// and the pool's budget allows it (or force), and reports whether it did.
func (rd *Reader) grow(force bool) bool {
	if rd.level >= bufpool.TopLevel(rd.largeSize) {
		return false
	}
	size := bufpool.LevelSize(rd.level+1, rd.largeSize)
	next := bufpool.TryGet(size)
	if next == nil {
		if !force {
			return false
		}
		next = bufpool.Get(size)
	}
	rd.level++
	rd.moveTo(*next)
	bufpool.Put(rd.held)
	rd.held, rd.grown = next, true
	return true
}

// moveTo moves the unread bytes to the front of dst and makes it the
// buffer.
func (rd *Reader) moveTo(dst []byte) {
	n := copy(dst, rd.buf[rd.r:rd.w])
	rd.base += int64(rd.r)
	rd.buf, rd.r, rd.w = dst, 0, n
}

// errAt returns the error of the given kind at buffer index i.
func (rd *Reader) errAt(kind error, i int, strict strictKind, format string, args ...any) error {
	return &bodyError{kind: kind, off: rd.base + int64(i), msg: fmt.Sprintf(format, args...), strict: strict}
}

// inputErr is the error once more input is needed and none can come:
// the error of src, or a truncated-body error if that was io.EOF.
func (rd *Reader) inputErr(what string) error {
	switch rd.srcErr {
	case nil:
		// Cannot happen: the buffer is always big enough.
		return rd.errAt(ErrMalformed, rd.r, notStrict, "%s does not fit in the buffer", what)
	case io.EOF:
		return rd.errAt(io.ErrUnexpectedEOF, rd.w, notStrict, "in %s", what)
	}
	return rd.srcErr
}

// more reads more input into the buffer. It reports whether it got any;
// if not, rd.srcErr is set (or, which cannot happen, the buffer is full).
func (rd *Reader) more() bool {
	if rd.srcErr != nil {
		return false
	}
	// Pooled buffers are held only while reads fill the room they are
	// given: a short read means the body has stopped arriving fast, so the
	// next read, which may wait for the network, goes to the small buffer.
	// A read that filled its room (more is probably waiting), or unread
	// bytes that need more room, move one size up.
	unread := rd.w - rd.r
	switch {
	case rd.grown:
		// Moved up already for this read (a full buffer in Part.next).
	case rd.held != nil && !rd.filled && unread < len(rd.small):
		rd.moveTo(rd.small)
		bufpool.Put(rd.held)
		rd.held, rd.level = nil, 0
	case rd.filled || unread == len(rd.buf):
		// Up one size if the pool's budget allows, or if what is buffered
		// needs the room (a header block over the small buffer).
		rd.grow(unread == len(rd.buf))
	}
	// Slide the unread bytes to the front when there is no room left, or
	// when that costs no more than the room it gives (always in the small
	// buffer, whose room should stay over net/http's 4 KiB reader).
	if rd.r > 0 && (rd.w == len(rd.buf) || rd.w-rd.r <= rd.r || rd.held == nil) {
		n := copy(rd.buf, rd.buf[rd.r:rd.w])
		rd.base += int64(rd.r)
		rd.r, rd.w = 0, n
	}
	if rd.w == len(rd.buf) {
		return false
	}
	for range 100 {
		room := len(rd.buf) - rd.w
		n, err := rd.src.Read(rd.buf[rd.w:])
		if n < 0 || n > room {
			rd.srcErr = errBadRead
			return false
		}
		rd.filled, rd.grown = n == room, false
		rd.w += n
		if err != nil {
			rd.srcErr = err
		}
		if n > 0 {
			return true
		}
		if err != nil {
			return false
		}
	}
	rd.srcErr = io.ErrNoProgress
	return false
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

// parseHeader parses a header block: lines that each end in CRLF, without
// the blank line. It follows net/textproto's ReadMIMEHeader.
func parseHeader(block []byte) (textproto.MIMEHeader, error) {
	h := make(textproto.MIMEHeader)
	if len(block) > 0 && (block[0] == ' ' || block[0] == '\t') {
		return nil, errors.New("header starts with white space")
	}
	var joined []byte // a folded header, joined
	for len(block) > 0 {
		i := bytes.Index(block, crlf)
		line := block[:i]
		block = block[i+2:]
		if bytes.IndexByte(line, ':') < 0 {
			return nil, fmt.Errorf("header line without a colon: %q", line)
		}
		kv := trim(line)
		if len(block) > 0 && (block[0] == ' ' || block[0] == '\t') {
			joined = append(joined[:0], kv...)
			for len(block) > 0 && (block[0] == ' ' || block[0] == '\t') {
				i := bytes.Index(block, crlf)
				joined = append(joined, ' ')
				joined = append(joined, trim(block[:i])...)
				block = block[i+2:]
			}
			kv = joined
		}
		k, v, _ := bytes.Cut(kv, []byte{':'})
		if !validKey(k) {
			return nil, fmt.Errorf("bad header key: %q", k)
		}
		for _, c := range v {
			if !validValueByte(c) {
				return nil, fmt.Errorf("bad header value: %q", v)
			}
		}
		key := textproto.CanonicalMIMEHeaderKey(string(k))
		h[key] = append(h[key], string(bytes.TrimLeft(v, " \t")))
	}
	return h, nil
}

var crlf = []byte("\r\n")

// trim returns b without leading and trailing spaces and tabs.
func trim(b []byte) []byte {
	return bytes.Trim(b, " \t")
}

// validKey reports whether k is a header key net/textproto accepts: token
// bytes (RFC 7230) and spaces, not empty.
func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c != ' ' && !isTokenByte(c) {
			return false
		}
	}
	return true
}

// isTokenByte reports whether c is a tchar of RFC 7230.
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c != 0 && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// validValueByte reports whether c may appear in a header value: VCHAR,
// obs-text, space or tab.
func validValueByte(c byte) bool {
	return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f)
}

// Verdicts of delimAfter.
const (
	delimUnknown = iota // more input is needed
	delimNo             // data
	delimYes            // the end of the part's data
)

// delimAfter tells, from the bytes a that follow a "--boundary" match in a
// part's data, whether the match ends the data: it does when followed by a
// space, tab, CR, LF or "--", like in mime/multipart.
func delimAfter(a []byte) int {
	if len(a) == 0 {
		return delimUnknown
	}
	switch a[0] {
	case ' ', '\t', '\r', '\n':
		return delimYes
	case '-':
		if len(a) == 1 {
			return delimUnknown
		}
		if a[1] == '-' {
			return delimYes
		}
	}
	return delimNo
}

// scan extends rd.pend over the buffered bytes of the current part's data,
// up to the delimiter that ends it (setting rd.delim) or to where more
// input is needed to tell.
func (rd *Reader) scan() {
	d := rd.nlDashBoundary
	for !rd.delim {
		b := rd.buf[rd.r+rd.pend : rd.w]
		if rd.atStart {
			db := rd.dashBoundary
			if len(b) < len(db) && bytes.HasPrefix(db, b) {
				return
			}
			rd.atStart = false
			if bytes.HasPrefix(b, db) {
				switch delimAfter(b[len(db):]) {
				case delimUnknown:
					rd.atStart = true
					return
				case delimYes:
					rd.delim, rd.delimSkip = true, 0
					return
				}
				rd.pend += len(db)
			}
			continue
		}
		i := rd.find.index(b)
		if i < 0 {
			// Everything is data but a tail that may begin the delimiter.
			// d has one CR, its first byte: only the last CR can begin it.
			k := max(len(b)-len(d)+1, 0)
			if j := bytes.LastIndexByte(b[k:], '\r'); j >= 0 && bytes.HasPrefix(d, b[k+j:]) {
				rd.pend += k + j
			} else {
				rd.pend += len(b)
			}
			return
		}
		switch delimAfter(b[i+len(d):]) {
		case delimUnknown:
			rd.pend += i
			return
		case delimYes:
			rd.pend += i
			rd.delim, rd.delimSkip = true, 2
			return
		}
		// d cannot overlap itself (one CR), so the search goes on after it.
		rd.pend += i + len(d)
	}
}

// finder finds the delimiter d ("\r\n--" + boundary) in part data.
//
// bytes.Index is slow on binary data: it calls IndexByte for d's first
// byte, CR, which random data has once every 256 bytes, and each call ends
// in a mispredicted branch; it reaches about a third of the speed of
// reading the data. finder instead samples one 2-byte gram every len(d)-1
// bytes, so every occurrence of d spans one sample, and checks it against
// a bitmap of d's grams; only samples in the bitmap lead to comparisons.
// When too many samples hit (data made of d's bytes), it falls back to
// bytes.Index.
type finder struct {
	d    []byte
	bits [1 << 16 / 64]uint64      // grams of d (the 2 bytes big-endian)
	last [1 << gramHashBits]uint8  // 1 + the last offset in d of a gram with this hash, or 0
	prev [MaxBoundaryLen + 4]uint8 // 1 + the offset before o with a gram of the same hash, or 0
}

const gramHashBits = 10

func gramHash(g uint16) uint32 {
	return uint32(g) * 2654435761 >> (32 - gramHashBits)
}

func (f *finder) init(d []byte) {
	f.d = d
	for i := 0; i+1 < len(d); i++ {
		g := uint16(d[i])<<8 | uint16(d[i+1])
		f.bits[g>>6] |= 1 << (g & 63)
		h := gramHash(g)
		f.prev[i] = f.last[h]
		f.last[h] = uint8(i + 1)
	}
}

// index returns the index of the first occurrence of f.d in s, or -1.
func (f *finder) index(s []byte) int {
	d := f.d
	m, n := len(d), len(s)
	// The occurrences that start in [j-m+2, j] are those that contain the
	// gram at j; j goes up by m-1, so each occurrence contains exactly one
	// sampled gram and they are found in order.
	step := m - 1
	hits := 0
	for j := m - 2; j+1 < n; j += step {
		g := uint16(s[j])<<8 | uint16(s[j+1])
		if f.bits[g>>6]&(1<<(g&63)) == 0 {
			continue
		}
		// The offsets in d of grams with g's hash, last first.
		for o := f.last[gramHash(g)]; o != 0; o = f.prev[o-1] {
			if p := j - int(o-1); p+m <= n && s[p] == d[0] && bytes.Equal(s[p:p+m], d) {
				return p
			}
		}
		hits++
		if hits > 16+(j/step)/3 {
			// No occurrence starts at or before j.
			if i := bytes.Index(s[j+1:], d); i >= 0 {
				return j + 1 + i
			}
			return -1
		}
	}
	return -1
}

// A Part is one part of a multipart body. Its data is read with Read,
// WriteTo or Chunk, which may be mixed; it ends where the next delimiter
// begins. A Part is read through its Reader and is valid until the next
// call to NextPart.
type Part struct {
	// Header is the part's header, with canonical keys like
	// mime/multipart's.
	Header textproto.MIMEHeader

	mr *Reader

	dispParsed bool
	disp       string
	dispParams map[string]string
}

// next returns the next run of the part's data, at most max bytes of it.
// If greedy, it reads on while reads fill the room they are given, until
// the buffer is full, the part ends, or input ends, to return long runs;
// it never waits for the network while it has data to return. A full
// buffer is moved into a bigger one when the pool's budget allows, and
// handed out otherwise.
func (p *Part) next(greedy bool, max int) ([]byte, error) {
	rd := p.mr
	if rd.cur != p {
		return nil, io.EOF // an earlier part, over
	}
	if rd.err != nil {
		return nil, rd.err // failed while p was being read
	}
	for {
		rd.scan()
		if rd.pend > 0 && (!greedy || rd.delim || rd.srcErr != nil || !rd.filled || (rd.w == len(rd.buf) && !rd.grow(false))) {
			n := min(rd.pend, max)
			c := rd.buf[rd.r : rd.r+n : rd.r+n]
			rd.r += n
			rd.pend -= n
			return c, nil
		}
		if rd.delim {
			return nil, io.EOF
		}
		if !rd.more() && rd.pend == 0 {
			return nil, rd.fail(rd.inputErr("part data"))
		}
	}
}

// Chunk returns the next run of the part's data as a slice of the
// Reader's buffer, valid only until the next call to any method of the
// Reader or Part. While reads fill the buffer they are given (the body
// arrives fast), it reads on and the runs are as long as the buffer
// allows; after a read that comes back short it returns what it has rather
// than wait for the network. At the end of the part's data it returns a
// nil slice and io.EOF; a run of data always comes with a nil error. It
// never allocates.
func (p *Part) Chunk() ([]byte, error) {
	return p.next(true, math.MaxInt)
}

// ChunkNow is Chunk without reading on while reads fill the buffer: it
// returns the data already buffered, and reads more input only when no
// data of the part is buffered. So when it reads, every byte read before has been
// handed out, but a tail (shorter than the delimiter) that may begin the
// delimiter. A reader that must look at each byte before the next is
// read, as track mode does, uses it.
func (p *Part) ChunkNow() ([]byte, error) {
	return p.next(false, math.MaxInt)
}

// Read reads the part's data; it returns io.EOF at its end.
func (p *Part) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c, err := p.next(false, len(b))
	return copy(b, c), err
}

// WriteTo writes the rest of the part's data to w, straight from the
// Reader's buffer in writes as long as the buffer allows. It implements
// io.WriterTo.
func (p *Part) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		c, err := p.Chunk()
		if len(c) > 0 {
			n, werr := w.Write(c)
			total += int64(n)
			if werr != nil {
				return total, werr
			}
			if n != len(c) {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// parseDisposition parses the Content-Disposition header once.
func (p *Part) parseDisposition() {
	if p.dispParsed {
		return
	}
	p.dispParsed = true
	d, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err == nil {
		p.disp, p.dispParams = d, params
	}
}

// FormName returns the name parameter of the part's Content-Disposition if
// it is of type form-data, and "" otherwise.
func (p *Part) FormName() string {
	p.parseDisposition()
	if p.disp != "form-data" {
		return ""
	}
	return p.dispParams["name"]
}

// FileName returns the filename parameter of the part's
// Content-Disposition exactly as sent (decoded if sent as RFC 2231
// filename*, as mime.ParseMediaType does), or "" if there is none. Unlike
// mime/multipart it is not passed through filepath.Base: "dir/a.png" and
// "..\\x" come back as they are, and the caller must sanitize them.
func (p *Part) FileName() string {
	p.parseDisposition()
	return p.dispParams["filename"]
}

// HasFileName reports whether the part's Content-Disposition has a
// filename parameter at all (filename="" counts).
func (p *Part) HasFileName() bool {
	p.parseDisposition()
	_, ok := p.dispParams["filename"]
	return ok
}
