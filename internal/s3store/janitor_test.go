package s3store

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestSweep(t *testing.T) {
	t.Parallel()
	s, _ := testStore(t, part)
	ctx := context.Background()

	// Left behind: two writers killed mid-way (one in place, one staged),
	// a staging object whose cleanup failed. Kept: a stored file, an
	// upload outside the prefix, a tus upload in the private folder.
	for _, key := range []string{"in-place.bin", ""} {
		w, err := s.NewWriter(ctx, WriterOptions{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, randomBytes(part+1, 1), 1<<20)
		w.removeSpool() // as a killed process would leave it, minus the spool
	}
	put(t, s, "kept.txt", []byte("kept"), Overwrite)
	for _, key := range []string{s.Key(stagingDir + "orphan"), "elsewhere/obj"} {
		if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(key), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{s.Key(Private + "/tus/abc"), "elsewhere/upload"} {
		if _, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: aws.String(key)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(openUploads(t, s)); n != 4 {
		t.Fatalf("%d open uploads to start with, want 4", n)
	}

	// Nothing is older than an hour yet.
	swept, err := s.Sweep(ctx, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if swept != (Swept{}) || len(openUploads(t, s)) != 4 {
		t.Fatalf("fresh things swept: %+v", swept)
	}

	// Two hours later.
	swept, err = s.Sweep(ctx, time.Hour, time.Now().Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if swept != (Swept{Uploads: 2, Staging: 1}) {
		t.Errorf("swept %+v, want 2 uploads and 1 staging object", swept)
	}
	ups := openUploads(t, s)
	slices.Sort(ups)
	if want := []string{"elsewhere/upload", "site/.uploads/tus/abc"}; !slices.Equal(ups, want) {
		t.Errorf("open uploads after the sweep: %q, want %q", ups, want)
	}
	if got, want := keys(t, s), []string{"elsewhere/obj", "site/kept.txt"}; !slices.Equal(got, want) {
		t.Errorf("keys after the sweep: %q, want %q", got, want)
	}
}
