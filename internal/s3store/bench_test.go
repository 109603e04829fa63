package s3store

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// BenchmarkWrite compares a 256 MiB object streamed through a Writer (the
// default part size) with one PutObject of the same bytes from memory, to
// the same versitygw:
//
//	go test -run - -bench Write -benchtime 3x ./internal/s3store
func BenchmarkWrite(b *testing.B) {
	const size = 256 << 20
	data := randomBytes(size, 5)
	s, _ := testStore(b, 0)
	ctx := context.Background()
	b.Run("writer", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			w, err := s.NewWriter(ctx, WriterOptions{Key: "w.bin"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(w, struct{ io.Reader }{bytes.NewReader(data)}, make([]byte, 32<<10)); err != nil {
				b.Fatal(err)
			}
			if err := w.Commit("w.bin", Overwrite); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("putobject", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{
				Bucket: &s.bucket, Key: aws.String(s.Key("p.bin")),
				Body: bytes.NewReader(data), ContentLength: aws.Int64(size),
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
