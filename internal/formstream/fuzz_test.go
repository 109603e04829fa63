package formstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// partRec is what a reader gave for one part that was read to its end.
type partRec struct {
	Header   textproto.MIMEHeader
	FormName string
	FileName string // raw (ours) or filepath.Base'd (mime/multipart)
	HasFile  bool
	Data     []byte
}

// chunkReader returns at most n bytes per Read, and io.EOF with the last
// data when eofWithData is set (like iotest.DataErrReader).
type chunkReader struct {
	b           []byte
	n           int
	eofWithData bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.n, len(c.b))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	if c.eofWithData && len(c.b) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// readStdlib reads body with mime/multipart, the oracle.
func readStdlib(body []byte, boundary string, chunk int) ([]partRec, error) {
	mr := multipart.NewReader(&chunkReader{b: body, n: chunk}, boundary)
	var parts []partRec
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return parts, nil
		}
		if err != nil {
			return parts, err
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return parts, err
		}
		_, params, perr := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		_, has := params["filename"]
		parts = append(parts, partRec{
			Header:   p.Header,
			FormName: p.FormName(),
			FileName: p.FileName(),
			HasFile:  perr == nil && has,
			Data:     data,
		})
	}
}

// Ways of reading a part's data.
const (
	viaChunk = iota
	viaRead
	viaWriteTo
	viaMixed
	numVia
)

// readOurs reads all parts of the body with rd, reading data the given way
// (Read with a buffer of readSize bytes).
func readOurs(rd *Reader, via, readSize int) ([]partRec, error) {
	var parts []partRec
	for {
		p, err := rd.NextPart()
		if err == io.EOF {
			return parts, nil
		}
		if err != nil {
			return parts, err
		}
		data, err := readData(p, via, readSize)
		if err != nil {
			return parts, err
		}
		parts = append(parts, partRec{
			Header:   p.Header,
			FormName: p.FormName(),
			FileName: p.FileName(),
			HasFile:  p.HasFileName(),
			Data:     data,
		})
	}
}

// readData reads the rest of p's data the given way.
func readData(p *Part, via, readSize int) ([]byte, error) {
	data := []byte{}
	switch via {
	case viaChunk:
		for {
			c, err := p.Chunk()
			if err == io.EOF {
				if c != nil {
					return data, errors.New("Chunk: data with io.EOF")
				}
				return data, nil
			}
			if err != nil {
				return data, err
			}
			if len(c) == 0 {
				return data, errors.New("Chunk: empty run with nil error")
			}
			data = append(data, c...)
		}
	case viaRead:
		buf := make([]byte, max(readSize, 1))
		for {
			n, err := p.Read(buf)
			data = append(data, buf[:n]...)
			if err == io.EOF {
				return data, nil
			}
			if err != nil {
				return data, err
			}
		}
	case viaWriteTo:
		var b bytes.Buffer
		_, err := p.WriteTo(&b)
		return append(data, b.Bytes()...), err
	default: // alternate Read, Chunk and a final WriteTo
		buf := make([]byte, max(readSize, 1))
		for i := 0; i < 6; i++ {
			var err error
			if i%2 == 0 {
				var n int
				n, err = p.Read(buf)
				data = append(data, buf[:n]...)
			} else {
				var c []byte
				c, err = p.Chunk()
				data = append(data, c...)
			}
			if err == io.EOF {
				return data, nil
			}
			if err != nil {
				return data, err
			}
		}
		var b bytes.Buffer
		_, err := p.WriteTo(&b)
		return append(data, b.Bytes()...), err
	}
}

// config is how one comparison sets up our Reader.
type config struct {
	chunk       int  // bytes per Read of the underlying reader
	eofWithData bool // the underlying reader returns io.EOF with its last data
	via         int  // how part data is read
	readSize    int  // buffer size for Part.Read
	bufSize     int
	smallSize   int  // the Reader's own buffer; 0: SmallBufferSize
	small       bool // small limits: MaxHeaderBytes 256, 16 lines, padding 16
}

func (c config) limits() (hdrBytes, hdrLines, padding int) {
	if c.small {
		return 256, 16, 16
	}
	return MaxHeaderBytes, MaxHeaderLines, MaxPadding
}

func (c config) newReader(body []byte, boundary string) *Reader {
	src := &chunkReader{b: body, n: c.chunk, eofWithData: c.eofWithData}
	h, l, p := c.limits()
	small := c.smallSize
	if small == 0 {
		small = SmallBufferSize
	}
	return newReaderSmall(src, boundary, c.bufSize, small, h, l, p)
}

// configFrom derives a config from the fuzzer's numbers.
func configFrom(chunk, bufSize uint) config {
	c := config{
		chunk:       1 + int(chunk%4096),
		eofWithData: chunk&(1<<12) != 0,
		via:         int(chunk>>13) % numVia,
		readSize:    1 + int(chunk>>16)%64,
		small:       bufSize&1 == 1,
		bufSize:     int(bufSize>>1) % (1 << 20),
	}
	if chunk&(1<<15) != 0 {
		c.chunk = 1 + c.chunk%7
	}
	if chunk&(1<<22) != 0 {
		// A tiny buffer of its own: the reader moves between it and the
		// large buffer all the time.
		c.smallSize = 1 + int(chunk>>23)%128
	}
	return c
}

// compare reads body with mime/multipart and with our Reader and checks
// the property: same parts where both succeed; an error from ours where the
// oracle fails; an error from ours where the oracle succeeds only in a
// documented stricter case.
func compare(t *testing.T, body []byte, boundary string, c config) {
	t.Helper()
	stdParts, stdErr := readStdlib(body, boundary, c.chunk)
	ourParts, ourErr := readOurs(c.newReader(body, boundary), c.via, c.readSize)

	// Every part both read through must be the same.
	for i := 0; i < min(len(stdParts), len(ourParts)); i++ {
		comparePart(t, i, stdParts[i], ourParts[i])
	}
	switch {
	case stdErr == nil && ourErr == nil:
		if len(stdParts) != len(ourParts) {
			t.Fatalf("stdlib gave %d parts, ours %d", len(stdParts), len(ourParts))
		}
	case stdErr != nil && ourErr == nil:
		t.Fatalf("stdlib rejects the body (%v) but ours accepts it (%d parts, stdlib read %d)", stdErr, len(ourParts), len(stdParts))
	case stdErr == nil && ourErr != nil:
		checkStricter(t, body, boundary, c, ourErr)
	}
	if ourErr != nil {
		checkErrorKind(t, ourErr)
	}
}

func comparePart(t *testing.T, i int, std, our partRec) {
	t.Helper()
	if !reflect.DeepEqual(std.Header, our.Header) {
		t.Fatalf("part %d: header: stdlib %q, ours %q", i, std.Header, our.Header)
	}
	if std.FormName != our.FormName {
		t.Fatalf("part %d: FormName: stdlib %q, ours %q", i, std.FormName, our.FormName)
	}
	base := our.FileName
	if base != "" {
		base = filepath.Base(base)
	}
	if std.FileName != base {
		t.Fatalf("part %d: FileName: stdlib %q, ours %q (raw %q)", i, std.FileName, base, our.FileName)
	}
	if std.HasFile != our.HasFile {
		t.Fatalf("part %d: HasFileName: stdlib %v, ours %v", i, std.HasFile, our.HasFile)
	}
	if !bytes.Equal(std.Data, our.Data) {
		t.Fatalf("part %d: data differs: stdlib %d bytes %q, ours %d bytes %q", i, len(std.Data), trunc(std.Data), len(our.Data), trunc(our.Data))
	}
}

func trunc(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// checkErrorKind checks that an error of ours is one of the documented
// kinds: a sentinel of the package wrapped, io.ErrUnexpectedEOF wrapped, or
// the underlying reader's error.
func checkErrorKind(t *testing.T, err error) {
	t.Helper()
	for _, e := range []error{ErrMalformed, ErrHeaderTooLarge, ErrInvalidBoundary, io.ErrUnexpectedEOF} {
		if errors.Is(err, e) {
			return
		}
	}
	t.Fatalf("error of an unexpected kind: %v", err)
}

// checkStricter checks that ours refused a body mime/multipart accepts
// only in a documented stricter case, checking the case on the input
// itself.
func checkStricter(t *testing.T, body []byte, boundary string, c config, err error) {
	t.Helper()
	var be *bodyError
	if !errors.As(err, &be) || be.strict == notStrict {
		t.Fatalf("ours rejects a body stdlib accepts, in no documented stricter case: %v", err)
	}
	off := int(be.off)
	hdrBytes, hdrLines, padding := c.limits()
	switch be.strict {
	case strictBoundary:
		if !errors.Is(err, ErrInvalidBoundary) {
			t.Fatalf("boundary error of kind %v", err)
		}
		if boundary != "" && len(boundary) <= 70 && !strings.ContainsAny(boundary, "\r\n") {
			t.Fatalf("valid boundary %q refused: %v", boundary, err)
		}
	case strictBareLF:
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("bare LF error of kind %v", err)
		}
		if off < 0 || off >= len(body) || body[off] != '\n' || (off > 0 && body[off-1] == '\r') {
			t.Fatalf("bare LF error but no bare LF at offset %d: %v", off, err)
		}
	case strictPadding:
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("padding error of kind %v", err)
		}
		if off < 0 || off+padding+1 > len(body) || len(bytes.Trim(body[off:off+padding+1], " \t")) != 0 {
			t.Fatalf("padding error but no %d spaces or tabs at offset %d: %v", padding+1, off, err)
		}
	case strictHeader:
		if !errors.Is(err, ErrHeaderTooLarge) {
			t.Fatalf("header error of kind %v", err)
		}
		size, lines := headerBlock(body[off:])
		if size <= hdrBytes && lines <= hdrLines {
			t.Fatalf("header error but the block at %d has %d bytes, %d lines: %v", off, size, lines, err)
		}
	case strictHeaderEOF:
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("header EOF error of kind %v", err)
		}
		if size, _ := headerBlock(body[off:]); size <= len(body)-off {
			t.Fatalf("header EOF error but the block at %d ends (%d bytes): %v", off, size, err)
		}
	default:
		t.Fatalf("unknown strict kind %d: %v", be.strict, err)
	}
}

// headerBlock measures the header block at the start of b the way
// net/textproto reads it: lines end in LF or CRLF, the block ends with an
// empty line. It returns the size (with the empty line) and the number of
// lines before it; size is len(b)+1 if there is no empty line.
func headerBlock(b []byte) (size, lines int) {
	pos := 0
	for {
		i := bytes.IndexByte(b[pos:], '\n')
		if i < 0 {
			return len(b) + 1, lines
		}
		line := b[pos : pos+i]
		pos += i + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return pos, lines
		}
		lines++
	}
}

// A seed is one input of the fuzz test's corpus.
type seed struct {
	body     []byte
	boundary string
}

const seedBoundary = "xYzZY0123456789abcdefXyZzy"

// writerBody builds a body with multipart.Writer.
func writerBody(boundary string, build func(w *multipart.Writer)) []byte {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if err := w.SetBoundary(boundary); err != nil {
		panic(err)
	}
	build(w)
	if err := w.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// pseudoRandom returns n reproducible bytes that look random.
func pseudoRandom(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x >> 32)
	}
	return b
}

// validBodies returns bodies such as browsers and clients send.
func validBodies(boundary string) [][]byte {
	field := func(w *multipart.Writer, name, value string) {
		if err := w.WriteField(name, value); err != nil {
			panic(err)
		}
	}
	file := func(w *multipart.Writer, name, filename string, data []byte) {
		fw, err := w.CreateFormFile(name, filename)
		if err != nil {
			panic(err)
		}
		fw.Write(data)
	}
	raw := func(w *multipart.Writer, h textproto.MIMEHeader, data []byte) {
		pw, err := w.CreatePart(h)
		if err != nil {
			panic(err)
		}
		pw.Write(data)
	}
	d := "--" + boundary
	return [][]byte{
		writerBody(boundary, func(w *multipart.Writer) {}),
		writerBody(boundary, func(w *multipart.Writer) { field(w, "a", "1") }),
		writerBody(boundary, func(w *multipart.Writer) {
			field(w, "title", "hello world")
			file(w, "file", "a.png", pseudoRandom(3000, 1))
			file(w, "file", "dir/sub/b.txt", []byte("line1\r\nline2\r\n"))
			field(w, "empty", "")
		}),
		writerBody(boundary, func(w *multipart.Writer) { file(w, "f", "", nil) }),
		writerBody(boundary, func(w *multipart.Writer) { file(w, "f", `..\x\y.bin`, []byte(d)) }),
		writerBody(boundary, func(w *multipart.Writer) {
			field(w, "x", "a"+d+"b")
			field(w, "y", "\r\n"+d[:len(d)-1])
			field(w, "z", "\r\n"+d+"x\r\n"+d+"-x")
			field(w, "cr", "\r\r\r\n\n\n\r\n\r\n\r")
			field(w, "tail", "abc\r\n")
			field(w, "tail2", "abc\r")
		}),
		writerBody(boundary, func(w *multipart.Writer) {
			h := textproto.MIMEHeader{}
			h.Set("Content-Disposition", `form-data; name="f"; filename*=UTF-8''na%C3%AFve%20file.txt`)
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Set("Content-Transfer-Encoding", "quoted-printable")
			raw(w, h, []byte("a=3Db"))
			h = textproto.MIMEHeader{}
			h.Set("Content-Disposition", `attachment; filename="x.txt"`)
			raw(w, h, []byte("att"))
			raw(w, textproto.MIMEHeader{}, []byte("no header"))
			h = textproto.MIMEHeader{}
			h.Set("Content-Disposition", `form-data; name="q"; filename=""`)
			raw(w, h, nil)
		}),
		writerBody(boundary, func(w *multipart.Writer) {
			for i := 0; i < 20; i++ {
				field(w, fmt.Sprint("k", i), strings.Repeat("v", i*7))
			}
		}),
		// Hand-written, as curl and browsers send.
		[]byte(d + "\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\ncontent-disposition: form-data; name=a\r\ncontent-type: text/plain\r\n\r\nA\r\n" + d + "--"),
		[]byte("preamble\r\nmore\n" + d + "\r\n\r\nA\r\n" + d + "--\r\nepilogue\r\n" + d + "\r\n"),
		[]byte(d + " \t \r\n\r\nA\r\n" + d + "\t\r\n\r\nB\r\n" + d + "-- \t\r\n"),
		[]byte(d + "\r\nX-Folded: a\r\n  b \r\n\tc\r\nX-Sp : v\r\nx-multi: 1\r\nX-Multi: 2\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n\r\n" + d + "\r\n\r\n\r\n" + d + "--\r\n"),
	}
}

// hostileBodies returns malformed, truncated and odd bodies built from the
// valid ones.
func hostileBodies(boundary string, valid [][]byte) [][]byte {
	d := "--" + boundary
	out := [][]byte{
		nil,
		[]byte(d),
		[]byte(d + "--"),
		[]byte(d + "\r\n"),
		[]byte(d + "\r\n\r\n"),
		[]byte(d + "\r\n\r\nA"),
		[]byte(d + "\r\n\r\nA\r\n" + d),
		[]byte(d + "\r\n\r\nA\r\n" + d + "-"),
		[]byte(d + "\r\n\r\nA\r\n" + d + "--\r"),
		[]byte(d + "\r\n\r\nA\r\n" + d + "--x\r\n"),
		[]byte(d + "\r\n\r\nA\r\n" + d + " x\r\n\r\nB\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n\r\nA\r\n" + d + "\n\r\nB\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n\r\nA\r\n" + d + "\r\r\n\r\nB\r\n" + d + "--\r\n"),
		[]byte(d + d + "\r\n\r\nA\r\n" + d + d + "--\r\n"),
		[]byte(d + "\r\n\r\nA\r\n" + d + "\r\n" + d + "\r\n\r\n" + d + "--\r\n"),
		[]byte(d + "\n\nA\n" + d + "\n\nB\n" + d + "--\n"),
		[]byte(d + "\r\nA: b\nC: d\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\nA: b\r\n\n" + "A\r\n" + d + "--\r\n"),
		[]byte(d + "--\n"),
		[]byte(d + "--\npre\r\n" + d + "\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + strings.Repeat(" ", 2000) + "\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n\r\nA\r\n" + d + "--" + strings.Repeat("\t", 1500)),
		[]byte(d + "\r\nX: " + strings.Repeat("h", 20000) + "\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n" + strings.Repeat("X: h\r\n", 150) + "\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n" + strings.Repeat("X: h\r\n", 20) + "\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n\r\n" + strings.Repeat("A", 5000) + "\r\n" + d + "--\r\n"),
		[]byte(strings.Repeat("p", 5000) + "\r\n" + d + "\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(strings.Repeat("p", 4095) + "\n" + d + "\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n no: colon\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\nnocolon\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\nBad Key: v\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\nK\x01: v\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\nK: v\x7f\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\nK: v\rw\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "\r\n: v\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte("\r\n" + d + "\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte("x" + d + "\r\n\r\nA\r\n" + d + "--\r\n"),
		[]byte(d + "x\r\n" + d + "\r\n\r\nA\r\n" + d + "--\r\n"),
	}
	for _, v := range valid {
		if len(v) < 2 {
			continue
		}
		// Truncated at a few places, without the closing delimiter, with
		// bare LFs, with the boundary doubled.
		for _, n := range []int{1, len(v) / 3, len(v) / 2, len(v) - 3, len(v) - 1} {
			if n > 0 && n < len(v) {
				out = append(out, v[:n])
			}
		}
		out = append(out,
			bytes.TrimSuffix(v, []byte(d+"--\r\n")),
			bytes.ReplaceAll(v, []byte("\r\n"), []byte("\n")),
			bytes.ReplaceAll(v, []byte(d), []byte(d+d)),
			bytes.ReplaceAll(v, []byte(d+"\r\n"), []byte(d+"  \r\n")),
		)
	}
	return out
}

// seeds returns the corpus: valid and hostile bodies with a few
// boundaries.
func seeds() []seed {
	var out []seed
	for _, b := range []string{seedBoundary, "b", "-", "a b", strings.Repeat("z", 70)} {
		valid := validBodies(b)
		for _, body := range append(valid, hostileBodies(b, valid)...) {
			out = append(out, seed{body, b})
		}
	}
	out = append(out,
		seed{[]byte("--\r\n\r\nA\r\n----\r\n"), ""},
		seed{[]byte("--" + strings.Repeat("z", 71) + "\r\n\r\nA\r\n--" + strings.Repeat("z", 71) + "--\r\n"), strings.Repeat("z", 71)},
		seed{[]byte("--a\rb\r\n\r\nA\r\n--a\rb--\r\n"), "a\rb"},
	)
	return out
}

// FuzzAgainstStdlib compares our Reader with mime/multipart's
// Reader.NextRawPart (see compare for the property). Its inputs are the
// body, the boundary, chunk (the bytes per Read of the underlying reader in
// its low 12 bits; its higher bits choose io.EOF with the last data, the way
// part data is read, the Part.Read buffer size) and bufSize (the low bit
// chooses small limits, so small buffers; the rest is the bufSize).
func FuzzAgainstStdlib(f *testing.F) {
	for i, s := range seeds() {
		// Vary how it is read: chunk sizes, read methods, buffer modes.
		u := uint(i)
		f.Add(s.body, s.boundary, u*2654435761, u*40503)
		f.Add(s.body, s.boundary, uint(1<<15|u%7<<13), uint(1))
		f.Add(s.body, s.boundary, uint(1<<22|u%97<<23|u%4096|u%4<<13), uint(1)|uint(u%3)<<1)
	}
	f.Fuzz(func(t *testing.T, body []byte, boundary string, chunk, bufSize uint) {
		c := configFrom(chunk, bufSize)
		// The fuzzer does not catch hangs: crash the worker instead.
		watchdog := time.AfterFunc(20*time.Second, func() {
			panic(fmt.Sprintf("hang: body %q boundary %q config %+v", body, boundary, c))
		})
		defer watchdog.Stop()
		compare(t, body, boundary, c)
	})
}

// TestIotestReaders reads the seed bodies through the testing/iotest
// readers with tiny buffers.
func TestIotestReaders(t *testing.T) {
	wrap := map[string]func(io.Reader) io.Reader{
		"OneByte": iotest.OneByteReader,
		"Half":    iotest.HalfReader,
		"DataErr": iotest.DataErrReader,
	}
	for _, s := range seeds() {
		std, stdErr := readStdlib(s.body, s.boundary, 1<<20)
		for name, wr := range wrap {
			for via := 0; via < numVia; via++ {
				rd := newReader(wr(bytes.NewReader(s.body)), s.boundary, 1, 256, 16, 16)
				ours, ourErr := readOurs(rd, via, 3)
				if stdErr == nil && ourErr == nil {
					if len(std) != len(ours) {
						t.Fatalf("%s: %q: %d parts, stdlib %d", name, s.body, len(ours), len(std))
					}
				}
				if stdErr != nil && ourErr == nil {
					t.Fatalf("%s: %q: accepted, stdlib: %v", name, s.body, stdErr)
				}
				for i := 0; i < min(len(std), len(ours)); i++ {
					comparePart(t, i, std[i], ours[i])
				}
			}
		}
	}
}
