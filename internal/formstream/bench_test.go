package formstream

import (
	"bytes"
	"io"
	"mime/multipart"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// singleFileBody returns a body of one file part of n random bytes.
func singleFileBody(n int, boundary string) []byte {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if err := w.SetBoundary(boundary); err != nil {
		panic(err)
	}
	fw, err := w.CreateFormFile("file", "big.bin")
	if err != nil {
		panic(err)
	}
	fw.Write(pseudoRandom(n, 1))
	w.Close()
	return b.Bytes()
}

// benchBody is the 64 MiB single-file body of the benchmarks, with a
// boundary like a browser's.
var benchBody = sync.OnceValue(func() []byte {
	return singleFileBody(64<<20, benchBoundary)
})

const benchBoundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"

// socket returns the body 32 KiB per Read, like a socket.
func socket(b []byte) io.Reader {
	return &chunkReader{b: b, n: 32 << 10}
}

func BenchmarkStdlib(b *testing.B) {
	body := benchBody()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		mr := multipart.NewReader(socket(body), benchBoundary)
		p, err := mr.NextRawPart()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, p); err != nil {
			b.Fatal(err)
		}
		if _, err := mr.NextRawPart(); err != io.EOF {
			b.Fatal(err)
		}
	}
}

func BenchmarkFormstream(b *testing.B) {
	body := benchBody()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd := NewReader(socket(body), benchBoundary, 0)
		p, err := rd.NextPart()
		if err != nil {
			b.Fatal(err)
		}
		for {
			c, err := p.Chunk()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			io.Discard.Write(c)
		}
		if _, err := rd.NextPart(); err != io.EOF {
			b.Fatal(err)
		}
	}
}

func BenchmarkFormstreamWriteTo(b *testing.B) {
	body := benchBody()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd := NewReader(socket(body), benchBoundary, 0)
		p, err := rd.NextPart()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		if _, err := rd.NextPart(); err != io.EOF {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopy is the baseline: the raw body copied to io.Discard.
func BenchmarkCopy(b *testing.B) {
	body := benchBody()
	b.SetBytes(int64(len(body)))
	buf := make([]byte, 1<<20)
	for b.Loop() {
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{socket(body)}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// tempFile returns a file to write the part to, rewound at each use.
func tempFile(b *testing.B) *os.File {
	f, err := os.Create(filepath.Join(b.TempDir(), "part"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkStdlibFile is BenchmarkStdlib writing the part to a file, as
// the upload server does.
func BenchmarkStdlibFile(b *testing.B) {
	body := benchBody()
	f := tempFile(b)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		f.Seek(0, io.SeekStart)
		mr := multipart.NewReader(socket(body), benchBoundary)
		p, err := mr.NextRawPart()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(f, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFormstreamFile is BenchmarkFormstreamWriteTo writing the part to
// a file.
func BenchmarkFormstreamFile(b *testing.B) {
	body := benchBody()
	f := tempFile(b)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		f.Seek(0, io.SeekStart)
		rd := NewReader(socket(body), benchBoundary, 0)
		p, err := rd.NextPart()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.WriteTo(f); err != nil {
			b.Fatal(err)
		}
	}
}
