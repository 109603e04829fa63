package formstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"
	"testing/iotest"
)

const tb = "TestBoundary0123456789" // boundary of the hand-written bodies

// body joins lines of a hand-written body; "--" in a line stands as is.
func body(parts ...string) []byte {
	return []byte(strings.Join(parts, ""))
}

// want is an expected part.
type want struct {
	name, file string
	hasFile    bool
	header     textproto.MIMEHeader // checked if not nil
	data       string
}

func disp(name string) string {
	return "Content-Disposition: form-data; name=\"" + name + "\"\r\n"
}

func dispFile(name, file string) string {
	return "Content-Disposition: form-data; name=\"" + name + "\"; filename=\"" + file + "\"\r\n"
}

const (
	dl       = "--" + tb + "\r\n"       // delimiter line
	ndl      = "\r\n--" + tb + "\r\n"   // CRLF + delimiter line
	endDelim = "\r\n--" + tb + "--\r\n" // CRLF + close delimiter line
)

func TestParts(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want []want
		err  error // nil: the body reads through to io.EOF
	}{
		{
			name: "file and text fields",
			body: body(dl, disp("title"), "\r\n", "hello", ndl,
				dispFile("up", "a.png"), "Content-Type: image/png\r\n\r\n", "\x89PNG\r\n\x1a\n\x00\x00", ndl,
				disp("n"), "\r\n", "42", endDelim),
			want: []want{
				{name: "title", data: "hello", header: textproto.MIMEHeader{"Content-Disposition": {`form-data; name="title"`}}},
				{name: "up", file: "a.png", hasFile: true, data: "\x89PNG\r\n\x1a\n\x00\x00",
					header: textproto.MIMEHeader{"Content-Disposition": {`form-data; name="up"; filename="a.png"`}, "Content-Type": {"image/png"}}},
				{name: "n", data: "42"},
			},
		},
		{
			name: "empty part",
			body: body(dl, disp("e"), "\r\n", ndl, disp("f"), "\r\n", "x", endDelim),
			want: []want{{name: "e"}, {name: "f", data: "x"}},
		},
		{
			name: "part without header",
			body: body(dl, "\r\n", "data", endDelim),
			want: []want{{header: textproto.MIMEHeader{}, data: "data"}},
		},
		{
			name: "no parts",
			body: body("--", tb, "--\r\n"),
		},
		{
			name: "boundary in data not at line start",
			body: body(dl, disp("a"), "\r\n", "x--"+tb+"\r\n--"+tb+"x", "\n--"+tb+"\r\n", endDelim),
			want: []want{{name: "a", data: "x--" + tb + "\r\n--" + tb + "x" + "\n--" + tb + "\r\n"}},
		},
		{
			name: "delimiter prefixes in data",
			body: body(dl, disp("a"), "\r\n", "\r\n--"+tb[:5]+"\r\n--"+tb+"-x\r\n--"+tb+"_\r\n-"+tb, endDelim),
			want: []want{{name: "a", data: "\r\n--" + tb[:5] + "\r\n--" + tb + "-x\r\n--" + tb + "_\r\n-" + tb}},
		},
		{
			name: "CR and LF runs",
			body: body(dl, disp("a"), "\r\n", "\r\r\r\n\n\n\r\n\r\n\r\n\r", ndl, disp("b"), "\r\n", "\n\n\r", endDelim),
			want: []want{{name: "a", data: "\r\r\r\n\n\n\r\n\r\n\r\n\r"}, {name: "b", data: "\n\n\r"}},
		},
		{
			name: "preamble and epilogue",
			body: body("preamble line\r\nanother\n", dl, disp("a"), "\r\n", "A", endDelim, "epilogue\r\n--", tb, "\r\ngarbage"),
			want: []want{{name: "a", data: "A"}},
		},
		{
			name: "padding after boundaries",
			body: body("--", tb, " \t \r\n", disp("a"), "\r\n", "A", "\r\n--", tb, "\t\r\n", disp("b"), "\r\n", "B", "\r\n--", tb, "-- \t"),
			want: []want{{name: "a", data: "A"}, {name: "b", data: "B"}},
		},
		{
			name: "close delimiter at the end of the body without CRLF",
			body: body(dl, disp("a"), "\r\n", "A\r\n--", tb, "--"),
			want: []want{{name: "a", data: "A"}},
		},
		{
			name: "bare delimiter right after the header ends the part, like mime/multipart",
			body: body(dl, disp("a"), "\r\n", dl, disp("b"), "\r\n", "B", endDelim),
			want: []want{{name: "a"}, {name: "b", data: "B"}},
		},
		{
			name: "header parsing like textproto",
			body: body(dl, "content-disposition: form-data;\r\n name=\"a\"\r\nX-Folded: one  \r\n\ttwo\r\nX-Sp : v\r\nx-m: 1\r\nX-M:2\r\n\r\n", "A", endDelim),
			want: []want{{name: "a", data: "A", header: textproto.MIMEHeader{
				"Content-Disposition": {`form-data; name="a"`},
				"X-Folded":            {"one two"},
				"X-Sp ":               {"v"},
				"X-M":                 {"1", "2"},
			}}},
		},
		{
			name: "raw file names",
			body: body(dl, dispFile("a", "dir/sub/a.png"), "\r\n", "1", ndl,
				dispFile("b", `..\\x`), "\r\n", "2", ndl,
				dispFile("c", "/etc/passwd"), "\r\n", "3", ndl,
				dispFile("d", ""), "\r\n", "4", ndl,
				"Content-Disposition: form-data; name=\"e\"; filename*=UTF-8''d%C3%A9j%C3%A0%2Fvu.txt\r\n\r\n", "5", ndl,
				"Content-Disposition: attachment; filename=\"att.txt\"\r\n\r\n", "6", endDelim),
			want: []want{
				{name: "a", file: "dir/sub/a.png", hasFile: true, data: "1"},
				{name: "b", file: `..\x`, hasFile: true, data: "2"},
				{name: "c", file: "/etc/passwd", hasFile: true, data: "3"},
				{name: "d", file: "", hasFile: true, data: "4"},
				{name: "e", file: "déjà/vu.txt", hasFile: true, data: "5"},
				{name: "", file: "att.txt", hasFile: true, data: "6"},
			},
		},
		// Errors.
		{name: "empty body", body: nil, err: io.ErrUnexpectedEOF},
		{name: "no delimiter", body: []byte("just text\r\n"), err: io.ErrUnexpectedEOF},
		{name: "no close delimiter", body: body(dl, disp("a"), "\r\n", "A"), err: io.ErrUnexpectedEOF},
		{name: "truncated in delimiter", body: body(dl, disp("a"), "\r\n", "A\r\n--", tb), err: io.ErrUnexpectedEOF},
		{name: "truncated in header", body: body(dl, disp("a")), err: io.ErrUnexpectedEOF},
		{name: "garbage after boundary", body: body(dl, disp("a"), "\r\n", "A\r\n--", tb, " x\r\n", disp("b"), "\r\n", "B", endDelim),
			want: []want{{name: "a", data: "A"}}, err: ErrMalformed},
		{name: "garbage after close delimiter", body: body(dl, disp("a"), "\r\n", "A\r\n--", tb, "--x\r\n"),
			want: []want{{name: "a", data: "A"}}, err: ErrMalformed},
		{name: "LF after boundary", body: body(dl, disp("a"), "\r\n", "A\r\n--", tb, "\n", disp("b"), "\r\n", "B", endDelim),
			want: []want{{name: "a", data: "A"}}, err: ErrMalformed},
		{name: "header without colon", body: body(dl, "nocolon\r\n\r\n", "A", endDelim), err: ErrMalformed},
		{name: "header starting with space", body: body(dl, " X: y\r\n\r\n", "A", endDelim), err: ErrMalformed},
		{name: "control byte in header value", body: body(dl, "X: a\x00b\r\n\r\n", "A", endDelim), err: ErrMalformed},
		{name: "bad byte in header key", body: body(dl, "X(: y\r\n\r\n", "A", endDelim), err: ErrMalformed},
		{name: "preamble line too long", body: body(strings.Repeat("p", 4096), "\n", dl, "\r\n", "A", endDelim), err: ErrMalformed},
		// Stricter than mime/multipart.
		{name: "bare LF delimiter line", body: []byte("--" + tb + "\n\nA\n--" + tb + "--\n"), err: ErrMalformed},
		{name: "bare LF header line", body: body(dl, "X: y\n\r\n", "A", endDelim), err: ErrMalformed},
		{name: "padding too long", body: body("--", tb, strings.Repeat(" ", MaxPadding+1), "\r\n\r\n", "A", endDelim), err: ErrMalformed},
		{name: "header too large", body: body(dl, "X: ", strings.Repeat("h", MaxHeaderBytes), "\r\n\r\n", "A", endDelim), err: ErrHeaderTooLarge},
		{name: "too many header lines", body: body(dl, strings.Repeat("X: h\r\n", MaxHeaderLines+1), "\r\n", "A", endDelim), err: ErrHeaderTooLarge},
		{name: "header at the limits", body: body(dl, strings.Repeat("X: h\r\n", MaxHeaderLines-1), "Y: ",
			strings.Repeat("y", MaxHeaderBytes-6*(MaxHeaderLines-1)-3-4), "\r\n\r\n", "A", endDelim),
			want: []want{{data: "A"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for via := 0; via < numVia; via++ {
				rd := NewReader(bytes.NewReader(tt.body), tb, 0)
				got, err := readOurs(rd, via, 5)
				if tt.err == nil && err != nil {
					t.Fatalf("via %d: error %v", via, err)
				}
				if tt.err != nil && !errors.Is(err, tt.err) {
					t.Fatalf("via %d: error %v, want %v", via, err, tt.err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("via %d: %d parts, want %d", via, len(got), len(tt.want))
				}
				for i, w := range tt.want {
					g := got[i]
					if g.FormName != w.name || g.FileName != w.file || g.HasFile != w.hasFile || string(g.Data) != w.data {
						t.Errorf("via %d: part %d: got name %q file %q (%v) data %q; want %q %q (%v) %q",
							via, i, g.FormName, g.FileName, g.HasFile, g.Data, w.name, w.file, w.hasFile, w.data)
					}
					if w.header != nil && fmt.Sprint(g.Header) != fmt.Sprint(w.header) {
						t.Errorf("via %d: part %d: header %q, want %q", via, i, g.Header, w.header)
					}
				}
				// Errors are sticky; io.EOF too.
				if _, err2 := rd.NextPart(); err2 != err && !(err == nil && err2 == io.EOF) {
					t.Errorf("via %d: NextPart after the end: %v, first %v", via, err2, err)
				}
			}
		})
	}
}

// sampleBody is a body with several parts, some data of which contains
// delimiter look-alikes.
func sampleBody(boundary string) []byte {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	w.SetBoundary(boundary)
	d := "--" + boundary
	w.WriteField("text", "some text\r\n")
	fw, _ := w.CreateFormFile("file", "dir/a.bin")
	fw.Write([]byte("\r\n" + d[:len(d)-2] + "\r\n" + d + "x" + "\r\n\r\n" + d + "-y"))
	w.WriteField("empty", "")
	fw, _ = w.CreateFormFile("big", `..\b.bin`)
	fw.Write(pseudoRandom(1500, 7))
	w.Close()
	return b.Bytes()
}

// splitReader returns the first n bytes with its first Read, then the rest.
type splitReader struct {
	b []byte
	n int
}

func (s *splitReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := len(s.b)
	if s.n > 0 {
		n, s.n = min(s.n, n), 0
	}
	n = copy(p, s.b[:n])
	s.b = s.b[n:]
	return n, nil
}

// smallReader returns a Reader with small limits, so a small buffer.
func smallReader(r io.Reader, boundary string) *Reader {
	return newReader(r, boundary, 1, 256, 16, 16)
}

func TestReadPositions(t *testing.T) {
	sample := sampleBody(tb)
	want, err := readStdlib(sample, tb, 1<<20)
	if err != nil || len(want) != 4 {
		t.Fatalf("stdlib: %d parts, %v", len(want), err)
	}
	check := func(t *testing.T, what string, rd *Reader, via int) {
		t.Helper()
		got, err := readOurs(rd, via, 7)
		if err != nil {
			t.Fatalf("%s via %d: %v", what, via, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s via %d: %d parts", what, via, len(got))
		}
		for i := range want {
			comparePart(t, i, want[i], got[i])
		}
	}
	for via := 0; via < numVia; via++ {
		for n := 0; n <= len(sample); n++ {
			check(t, fmt.Sprint("split at ", n), NewReader(&splitReader{sample, n}, tb, 1), via)
			check(t, fmt.Sprint("split at ", n, ", small buffer"), smallReader(&splitReader{sample, n}, tb), via)
		}
		check(t, "OneByteReader", smallReader(iotest.OneByteReader(bytes.NewReader(sample)), tb), via)
		check(t, "HalfReader", smallReader(iotest.HalfReader(bytes.NewReader(sample)), tb), via)
		check(t, "DataErrReader", smallReader(iotest.DataErrReader(bytes.NewReader(sample)), tb), via)
		check(t, "DataErrReader+OneByteReader", smallReader(iotest.DataErrReader(iotest.OneByteReader(bytes.NewReader(sample))), tb), via)
	}
}

// TestBufferEdges puts delimiters and their look-alikes at every offset
// around the edges of a small buffer.
func TestBufferEdges(t *testing.T) {
	rd := smallReader(nil, tb)
	size := len(rd.buf)
	d := "\r\n--" + tb
	looks := []string{d[:len(d)-1], d + "x", d + "-x", d[:3], "\r"}
	for n := 0; n < 2*size+len(d); n++ {
		data := strings.ReplaceAll(string(pseudoRandom(n, uint64(n))), d, "xxxx")
		bodies := []string{dl + "\r\n" + data + endDelim} // the delimiter at offset n
		for _, look := range looks {
			bodies = append(bodies, dl+"\r\n"+data+look+endDelim) // a look-alike at offset n
		}
		for _, b := range bodies {
			want := strings.TrimSuffix(strings.TrimPrefix(b, dl+"\r\n"), endDelim)
			for via := 0; via < numVia; via++ {
				for _, src := range []io.Reader{strings.NewReader(b), iotest.HalfReader(strings.NewReader(b))} {
					got, err := readOurs(smallReader(src, tb), via, 64)
					if err != nil || len(got) != 1 || string(got[0].Data) != want {
						t.Fatalf("offset %d, body %q, via %d: %d parts, %v", n, b[len(b)-30:], via, len(got), err)
					}
				}
			}
		}
	}
}

func TestTruncated(t *testing.T) {
	sample := sampleBody(tb)
	for via := 0; via < numVia; via++ {
		// Cutting only the final CRLF leaves a complete body.
		for n := 0; n < len(sample)-2; n++ {
			for _, rd := range []*Reader{NewReader(bytes.NewReader(sample[:n]), tb, 1), smallReader(iotest.OneByteReader(bytes.NewReader(sample[:n])), tb)} {
				_, err := readOurs(rd, via, 3)
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("cut at %d of %d, via %d: error %v", n, len(sample), via, err)
				}
			}
		}
	}
}

func TestReaderError(t *testing.T) {
	sample := sampleBody(tb)
	boom := errors.New("boom")
	for n := 0; n < len(sample)-2; n++ {
		for via := 0; via < numVia; via++ {
			src := io.MultiReader(bytes.NewReader(sample[:n]), iotest.ErrReader(boom))
			_, err := readOurs(smallReader(src, tb), via, 3)
			if !errors.Is(err, boom) {
				t.Fatalf("error after %d bytes, via %d: got %v", n, via, err)
			}
		}
	}
	// An error after a complete body is never seen.
	src := io.MultiReader(bytes.NewReader(sample), iotest.ErrReader(boom))
	if _, err := readOurs(NewReader(src, tb, 0), viaChunk, 0); err != nil {
		t.Fatalf("complete body: %v", err)
	}
}

func TestInvalidBoundary(t *testing.T) {
	for _, b := range []string{"", strings.Repeat("b", 71), "a\r\nb", "a\nb"} {
		rd := NewReader(strings.NewReader("--"+b+"\r\n\r\nA\r\n--"+b+"--\r\n"), b, 0)
		if _, err := rd.NextPart(); !errors.Is(err, ErrInvalidBoundary) {
			t.Errorf("boundary %q: %v", b, err)
		}
	}
	b := strings.Repeat("b", 70)
	rd := NewReader(strings.NewReader("--"+b+"\r\n\r\nA\r\n--"+b+"--\r\n"), b, 0)
	if _, err := readOurs(rd, viaRead, 10); err != nil {
		t.Errorf("70-byte boundary: %v", err)
	}
}

func TestReadWriteToChunkSame(t *testing.T) {
	data := pseudoRandom(3<<20+12345, 99)
	// Plant delimiter look-alikes.
	for i := 1000; i+40 < len(data); i += 100003 {
		copy(data[i:], "\r\n--"+tb+"-x")
	}
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	w.SetBoundary(tb)
	fw, _ := w.CreateFormFile("f", "f.bin")
	fw.Write(data)
	w.WriteField("after", "x")
	w.Close()
	for via := 0; via < numVia; via++ {
		for _, bufSize := range []int{0, 1, 70000} {
			got, err := readOurs(NewReader(&chunkReader{b: b.Bytes(), n: 32 << 10}, tb, bufSize), via, 4096)
			if err != nil || len(got) != 2 || !bytes.Equal(got[0].Data, data) || string(got[1].Data) != "x" {
				t.Fatalf("via %d, bufSize %d: %d parts, %v", via, bufSize, len(got), err)
			}
		}
	}
}

// TestChunkLong checks that Chunk returns runs as long as the buffer, from
// a reader giving 32 KiB at a time, and does not allocate.
// TestChunkLong checks that Chunk returns long runs while reads fill the
// room they are given (a socket with data waiting), and runs no shorter
// than each read when reads come back short.
func TestChunkLong(t *testing.T) {
	body := singleFileBody(8<<20, tb)
	for _, tc := range []struct {
		name      string
		perRead   int
		maxChunks int // at most this many runs
		minRun    int // every run but the last is at least this long
	}{
		{"reads fill the buffer", len(body), 10, 1 << 20},
		{"32 KiB reads", 32 << 10, 8 << 20 / (32 << 10) * 2, 32 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := NewReader(&chunkReader{b: body, n: tc.perRead}, tb, 0)
			p, err := rd.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			var runs []int
			total := 0
			for {
				c, err := p.Chunk()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				runs = append(runs, len(c))
				total += len(c)
			}
			if total != 8<<20 || len(runs) > tc.maxChunks {
				t.Errorf("%d bytes in %d chunks", total, len(runs))
			}
			for i, n := range runs[:len(runs)-1] {
				if n < tc.minRun && i > 0 {
					t.Errorf("run %d of %d: %d bytes; want at least %d", i, len(runs), n, tc.minRun)
				}
			}
			if _, err := rd.NextPart(); err != io.EOF {
				t.Errorf("NextPart: %v", err)
			}
		})
	}
}

func TestChunkNoAlloc(t *testing.T) {
	body := singleFileBody(8<<20, tb)
	rd := NewReader(&chunkReader{b: body, n: 32 << 10}, tb, 1) // smallest buffer
	p, err := rd.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if c, err := p.Chunk(); err != nil || len(c) < 1000 {
			t.Fatalf("%d bytes, %v", len(c), err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Chunk", allocs)
	}
}

func TestOldPart(t *testing.T) {
	rd := NewReader(bytes.NewReader(body(dl, disp("a"), "\r\n", "AAAA", ndl, disp("b"), "\r\n", "B", endDelim)), tb, 0)
	a, _ := rd.NextPart()
	buf := make([]byte, 2)
	if n, err := a.Read(buf); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	b, err := rd.NextPart()
	if err != nil || b.FormName() != "b" {
		t.Fatal(err)
	}
	if c, err := a.Chunk(); c != nil || err != io.EOF {
		t.Errorf("old part: %q %v", c, err)
	}
	if d, err := io.ReadAll(b); string(d) != "B" || err != nil {
		t.Errorf("part b: %q %v", d, err)
	}
	if _, err := rd.NextPart(); err != io.EOF {
		t.Errorf("end: %v", err)
	}
}

// TestFinder checks finder.index against bytes.Index, on data made of few
// distinct bytes so that the delimiter and its pieces are frequent, and on
// data that makes it fall back to bytes.Index.
func TestFinder(t *testing.T) {
	for k := 0; k < 30000; k++ {
		rnd := pseudoRandom(1000, uint64(k))
		m := 1 + int(rnd[0])%12
		d := []byte("\r\n--" + string(rnd[1:1+m]))
		for i := 4; i < len(d); i++ {
			d[i] = "ab-\r\n"[d[i]%5]
		}
		alphabet := "ab-\r\nxyz"[:3+k%6]
		s := rnd[20 : 20+int(rnd[15])*3]
		for i := range s {
			s[i] = alphabet[int(s[i])%len(alphabet)]
		}
		if len(s) > 0 && k%3 == 0 {
			copy(s[int(rnd[16])%len(s):], d)
		}
		if k%5 == 0 {
			copy(s[int(rnd[17])%max(len(s), 1):], d[:len(d)-1])
		}
		var f finder
		f.init(d)
		if got, want := f.index(s), bytes.Index(s, d); got != want {
			t.Fatalf("%q in %q: %d, want %d", d, s, got, want)
		}
	}
	// Long data of dashes (every sample hits) with the delimiter far in.
	for _, n := range []int{0, 1, 100, 5000, 99999} {
		d := []byte("\r\n------" + tb)
		s := append(bytes.Repeat([]byte("-"), n), d...)
		var f finder
		f.init(d)
		if got := f.index(s); got != n {
			t.Errorf("dashes %d: %d", n, got)
		}
	}
}
