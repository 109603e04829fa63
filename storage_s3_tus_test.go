package reflexupload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/reflexupload/caddy-reflex-upload/internal/enginetest"
)

// s3TusSite is an upload endpoint at the default prefix whose files and
// resumable uploads are in a bucket under the key prefix t.
const s3TusSite = `reflex_upload {
	root ROOT
	on_conflict reject
	max_size 40MiB
	storage s3 {
		bucket site
		endpoint ENDPOINT
		prefix t
		access_key ACCESS
		secret_key SECRET
		path_style
	}
}`

// startS3TusSite starts a versitygw with the bucket and the site of
// s3TusSite, and returns a client of the bucket and the site's root.
func startS3TusSite(t *testing.T) (*s3.Client, string) {
	t.Helper()
	gw := enginetest.Versitygw(t)
	c := s3.New(s3.Options{
		Region:       gw.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(gw.AccessKey, gw.SecretKey, ""),
		BaseEndpoint: aws.String(gw.Endpoint),
		UsePathStyle: true,
	})
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(s3Bucket)}); err != nil {
		t.Fatal(err)
	}
	root := startSite(t, strings.NewReplacer("ENDPOINT", gw.Endpoint, "ACCESS", gw.AccessKey, "SECRET", gw.SecretKey).Replace(s3TusSite))
	return c, root
}

// tusKeys is the keys of the bucket under the private folder of upload id.
func tusKeys(t *testing.T, c *s3.Client, id string) []string {
	t.Helper()
	var ks []string
	for _, k := range bucketKeys(t, c) {
		if strings.HasPrefix(k, "t/.uploads/tus/"+id) {
			ks = append(ks, k)
		}
	}
	return ks
}

// TestS3StorageTus: resumable uploads through the handler on storage s3:
// the object in the bucket is byte-identical and reported with its
// sha256; a bad checksum, termination, concatenation and a deferred
// length work as on the local disk, and nothing is left but the objects
// and the states of completed uploads.
func TestS3StorageTus(t *testing.T) {
	t.Parallel()
	c, _ := startS3TusSite(t)

	res, _ := tusDo(t, http.MethodOptions, tusEndpoint, nil)
	if got := res.Header.Get("Tus-Extension"); got != "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,concatenation" {
		t.Errorf("Tus-Extension = %q", got)
	}

	data := randomBytes(t, 12<<20+333) // parts of 8 MiB and a tail
	loc := tusCreate(t, len(data), "docs/big.bin")
	id := strings.TrimPrefix(loc, tusEndpoint+"/")
	chunk := 5<<20 + 1
	for off := 0; off < len(data); {
		res, body := tusDo(t, http.MethodHead, loc, nil)
		assertOffset(t, res, body, http.StatusOK, off)
		end := min(off+chunk, len(data))
		res, body = tusPatch(t, loc, off, data[off:end])
		assertOffset(t, res, body, http.StatusNoContent, end)
		if end < len(data) {
			res, body = tusPatch(t, loc, off, data[off:end])
			assertError(t, res, body, http.StatusConflict, "offset-mismatch", "")
			if got := res.Header.Get("Upload-Offset"); got != strconv.Itoa(end) {
				t.Fatalf("409 offset %q; want %d", got, end)
			}
			if r, _ := get(t, "/_upload/docs/big.bin"); r.StatusCode != http.StatusNotFound {
				t.Fatalf("an unfinished upload is served: %d", r.StatusCode)
			}
		}
		off = end
	}
	if got := objectBytes(t, c, "t/docs/big.bin"); !bytes.Equal(got, data) {
		t.Fatalf("the object holds %d bytes, not the %d sent", len(got), len(data))
	}
	p := progressOf(t, id)
	if p.State != stateDone || len(p.Files) != 1 || p.Files[0].SHA256 != sha256Hex(data) || p.Files[0].Path != "docs/big.bin" || p.Files[0].Size != int64(len(data)) {
		t.Fatalf("progress when done: %+v", p)
	}
	res, body := tusDo(t, http.MethodHead, loc, nil)
	assertOffset(t, res, body, http.StatusOK, len(data))
	if got, _ := get(t, "/_upload/docs/big.bin"); got.StatusCode != http.StatusOK {
		t.Fatalf("GET of the stored file: %d", got.StatusCode)
	}
	assertBucket(t, c, "t/.uploads/tus/"+id+".info", "t/docs/big.bin") // the state stays until expiry

	t.Run("checksum mismatch", func(t *testing.T) {
		d := randomBytes(t, 3000)
		loc := tusCreate(t, len(d), "sum.bin")
		sum := sha256.Sum256(d[:1000])
		wrong := "sha256 " + base64.StdEncoding.EncodeToString(sum[:])
		res, body := tusPatch(t, loc, 0, d, "Upload-Checksum", wrong)
		assertError(t, res, body, 460, "checksum-mismatch", "sum.bin")
		res, body = tusDo(t, http.MethodHead, loc, nil)
		assertOffset(t, res, body, http.StatusOK, 0)
		sum = sha256.Sum256(d)
		res, body = tusPatch(t, loc, 0, d, "Upload-Checksum", "sha256 "+base64.StdEncoding.EncodeToString(sum[:]))
		assertOffset(t, res, body, http.StatusNoContent, 3000)
		if !bytes.Equal(objectBytes(t, c, "t/sum.bin"), d) {
			t.Fatal("t/sum.bin differs")
		}
	})

	t.Run("termination leaves nothing", func(t *testing.T) {
		d := randomBytes(t, 9<<20)
		loc := tusCreate(t, 20<<20, "gone.bin")
		id := strings.TrimPrefix(loc, tusEndpoint+"/")
		res, body := tusPatch(t, loc, 0, d)
		assertOffset(t, res, body, http.StatusNoContent, len(d))
		if len(openUploads(t, c)) != 1 || len(tusKeys(t, c, id)) != 2 {
			t.Fatalf("mid-upload: open uploads %q, keys %q; want one, and the state and tail", openUploads(t, c), tusKeys(t, c, id))
		}
		res, _ = tusDo(t, http.MethodDelete, loc, nil)
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE: %d", res.StatusCode)
		}
		res, _ = tusDo(t, http.MethodHead, loc, nil)
		if res.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD after DELETE: %d", res.StatusCode)
		}
		if ks, ups := tusKeys(t, c, id), openUploads(t, c); len(ks) != 0 || len(ups) != 0 {
			t.Fatalf("after DELETE: keys %q, open uploads %q", ks, ups)
		}
	})

	t.Run("lost part", func(t *testing.T) {
		// A committed part replaced behind the state's back (a stale writer
		// in the window of its check): the upload is refused and removed,
		// never completed with mixed bytes; the client starts again.
		loc := tusCreate(t, 20<<20, "lost.bin")
		id := strings.TrimPrefix(loc, tusEndpoint+"/")
		res, body := tusPatch(t, loc, 0, randomBytes(t, 9<<20))
		assertOffset(t, res, body, http.StatusNoContent, 9<<20)
		var state struct {
			Name     string `json:"name"`
			UploadID string `json:"upload_id"`
		}
		if err := json.Unmarshal(objectBytes(t, c, "t/.uploads/tus/"+id+".info"), &state); err != nil || state.UploadID == "" {
			t.Fatalf("the upload's state: %v %+v", err, state)
		}
		// Under reject, its multipart upload is under its name.
		if ups := openUploads(t, c); state.Name != "lost.bin" || !slices.Equal(ups, []string{"t/lost.bin"}) {
			t.Fatalf("the upload's name %q, open multipart uploads %q; want lost.bin's", state.Name, ups)
		}
		other := randomBytes(t, 8<<20)
		if _, err := c.UploadPart(context.Background(), &s3.UploadPartInput{
			Bucket: aws.String(s3Bucket), Key: aws.String("t/lost.bin"), UploadId: &state.UploadID,
			PartNumber: aws.Int32(1), Body: bytes.NewReader(other), ContentLength: aws.Int64(int64(len(other))),
		}); err != nil {
			t.Fatal(err)
		}
		res, body = tusPatch(t, loc, 9<<20, randomBytes(t, 1000))
		assertError(t, res, body, http.StatusNotFound, "upload-not-found", "")
		if res, _ := tusDo(t, http.MethodHead, loc, nil); res.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD of a lost upload: %d", res.StatusCode)
		}
		if ks, ups := tusKeys(t, c, id), openUploads(t, c); len(ks) != 0 || len(ups) != 0 {
			t.Fatalf("after a lost upload: keys %q, open uploads %q", ks, ups)
		}
	})

	t.Run("concatenation", func(t *testing.T) {
		d := randomBytes(t, 9<<20+1000)
		var parts []string
		for _, r := range [][2]int{{0, 9 << 20}, {9 << 20, len(d)}} {
			res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", strconv.Itoa(r[1]-r[0]), "Upload-Concat", "partial")
			if res.StatusCode != http.StatusCreated {
				t.Fatalf("partial: %d %s", res.StatusCode, body)
			}
			loc := res.Header.Get("Location")
			res, body = tusPatch(t, loc, 0, d[r[0]:r[1]])
			assertOffset(t, res, body, http.StatusNoContent, r[1]-r[0])
			parts = append(parts, loc)
		}
		res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Concat", "final;"+strings.Join(parts, " "), "Upload-Metadata", "filename "+b64("joined.bin"))
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("final: %d %s", res.StatusCode, body)
		}
		if !bytes.Equal(objectBytes(t, c, "t/joined.bin"), d) {
			t.Fatal("t/joined.bin is not the partial uploads one after the other")
		}
		id := strings.TrimPrefix(res.Header.Get("Location"), tusEndpoint+"/")
		if p := progressOf(t, id); p.State != stateDone || p.Files[0].SHA256 != sha256Hex(d) {
			t.Fatalf("progress of the final upload: %+v", p)
		}
		for _, loc := range parts {
			if ks := tusKeys(t, c, strings.TrimPrefix(loc, tusEndpoint+"/")); len(ks) != 0 {
				t.Errorf("a partial upload is left: %q", ks)
			}
		}
	})

	t.Run("deferred length", func(t *testing.T) {
		d := randomBytes(t, 6000)
		res, body := tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Defer-Length", "1", "Upload-Metadata", "filename "+b64("later.bin"))
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("creation: %d %s", res.StatusCode, body)
		}
		loc := res.Header.Get("Location")
		res, body = tusPatch(t, loc, 0, d[:2000])
		assertOffset(t, res, body, http.StatusNoContent, 2000)
		res, _ = tusDo(t, http.MethodHead, loc, nil)
		if res.Header.Get("Upload-Defer-Length") != "1" {
			t.Fatalf("HEAD of a deferred upload: %v", res.Header)
		}
		res, body = tusPatch(t, loc, 2000, d[2000:], "Upload-Length", "6000")
		assertOffset(t, res, body, http.StatusNoContent, 6000)
		if !bytes.Equal(objectBytes(t, c, "t/later.bin"), d) {
			t.Fatal("t/later.bin differs")
		}
	})

	t.Run("creation with upload", func(t *testing.T) {
		d := []byte("small and whole")
		res, body := tusDo(t, http.MethodPost, tusEndpoint, d, "Upload-Length", strconv.Itoa(len(d)),
			"Upload-Metadata", "filename "+b64("small.txt"), "Content-Type", tusContentType)
		assertOffset(t, res, body, http.StatusCreated, len(d))
		if !bytes.Equal(objectBytes(t, c, "t/small.txt"), d) {
			t.Fatal("t/small.txt differs")
		}
		// reject: the same name again is refused at creation.
		res, body = tusDo(t, http.MethodPost, tusEndpoint, nil, "Upload-Length", "3", "Upload-Metadata", "filename "+b64("small.txt"))
		assertError(t, res, body, http.StatusConflict, "file-exists", "small.txt")
	})
	if ups := openUploads(t, c); len(ups) != 0 {
		t.Errorf("open multipart uploads at the end: %q", ups)
	}
}

// TestS3StorageTusExpiry: the sweeper removes expired resumable uploads
// from the bucket, an unfinished one (a part and a tail) and the state of
// a completed one, and aborts their multipart uploads; the stored file
// stays.
func TestS3StorageTusExpiry(t *testing.T) {
	t.Parallel()
	c, root := startS3TusSite(t)
	clock := &fakeClock{now: time.Now()}
	reg := registryOf(t, root)
	reg.setClock(clock.Now)
	defer reg.setClock(time.Now)

	unfinished := tusCreate(t, 20<<20, "unfinished.bin")
	res, body := tusPatch(t, unfinished, 0, randomBytes(t, 9<<20))
	assertOffset(t, res, body, http.StatusNoContent, 9<<20)
	d := randomBytes(t, 1000)
	done := tusCreate(t, len(d), "done.bin")
	res, body = tusPatch(t, done, 0, d)
	assertOffset(t, res, body, http.StatusNoContent, len(d))
	if n := handlerOf(t, root).root.sweepTus(clock.Now()); n != 0 {
		t.Fatalf("the sweeper removed %d live uploads", n)
	}
	clock.Advance(25 * time.Hour)
	res, _ = tusDo(t, http.MethodHead, unfinished, nil)
	if res.StatusCode != http.StatusGone {
		t.Fatalf("HEAD of an expired upload: %d", res.StatusCode)
	}
	if n := handlerOf(t, root).root.sweepTus(clock.Now()); n != 2 {
		t.Fatalf("the sweeper removed %d uploads; want 2", n)
	}
	assertBucket(t, c, "t/done.bin")
}
