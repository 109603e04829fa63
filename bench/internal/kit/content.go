package kit

import (
	"crypto/rand"
	"io"
)

// ChunkSize is the size of the random buffer repeated to form an upload's
// content.
const ChunkSize = 4 << 20

// RandomChunk returns a random buffer of ChunkSize bytes.
func RandomChunk() ([]byte, error) {
	chunk := make([]byte, ChunkSize)
	_, err := rand.Read(chunk)
	return chunk, err
}

// RepeatReader yields Left bytes of Chunk, repeated, starting at Chunk[Off]:
// an upload's content generated on the fly, without disk reads.
type RepeatReader struct {
	Chunk []byte
	Off   int
	Left  int64
}

// ContentAt returns a reader for bytes [off, off+n) of the content.
func ContentAt(chunk []byte, off, n int64) *RepeatReader {
	return &RepeatReader{Chunk: chunk, Off: int(off % int64(len(chunk))), Left: n}
}

func (r *RepeatReader) Read(p []byte) (int, error) {
	if r.Left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.Left {
		p = p[:r.Left]
	}
	n := copy(p, r.Chunk[r.Off:])
	r.Off = (r.Off + n) % len(r.Chunk)
	r.Left -= int64(n)
	return n, nil
}
