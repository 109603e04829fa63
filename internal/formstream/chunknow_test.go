package formstream

import (
	"io"
	"testing"
)

// pieceReader gives one piece per Read and counts the reads.
type pieceReader struct {
	pieces [][]byte
	reads  int
}

func (r *pieceReader) Read(p []byte) (int, error) {
	r.reads++
	if len(r.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.pieces[0])
	if r.pieces[0] = r.pieces[0][n:]; len(r.pieces[0]) == 0 {
		r.pieces = r.pieces[1:]
	}
	return n, nil
}

// TestChunkNow: ChunkNow hands out what is buffered before it reads again,
// keeping back only a tail that may begin the delimiter. Chunk reads on
// only while reads fill the room they are given (fast input); these reads
// come back short, so it hands out the same runs.
func TestChunkNow(t *testing.T) {
	head := dl + dispFile("f", "a.bin") + "\r\n"
	pieces := []string{head + "first\r\n--Test", "Boundary0123456789X data\r\nsecond", endDelim}
	type step struct {
		data  string
		reads int // reads of the input once the chunk is returned
	}
	tests := []struct {
		name  string
		chunk func(*Part) ([]byte, error)
		want  []step
	}{
		{"ChunkNow", (*Part).ChunkNow, []step{
			{"first", 1},
			{"\r\n--TestBoundary0123456789X data\r\nsecond", 2},
		}},
		{"Chunk", (*Part).Chunk, []step{
			{"first", 1},
			{"\r\n--TestBoundary0123456789X data\r\nsecond", 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &pieceReader{}
			for _, p := range pieces {
				src.pieces = append(src.pieces, []byte(p))
			}
			rd := NewReader(src, tb, 0)
			p, err := rd.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range tc.want {
				c, err := tc.chunk(p)
				if err != nil || string(c) != w.data || src.reads != w.reads {
					t.Fatalf("chunk %d: %q, %v after %d reads; want %q after %d reads", i, c, err, src.reads, w.data, w.reads)
				}
			}
			if c, err := tc.chunk(p); err != io.EOF {
				t.Fatalf("after the data: %q, %v; want io.EOF", c, err)
			}
			if _, err := rd.NextPart(); err != io.EOF {
				t.Fatalf("NextPart after the close delimiter: %v", err)
			}
		})
	}
}
