package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/reflexupload/caddy-reflex-upload/internal/store"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// twinFiles is two adapters over the same bucket, as two instances have:
// nothing shared but the bucket.
func twinFiles(t *testing.T) (*Store, *Files, *Files) {
	t.Helper()
	s, _, a, b := twinFilesRec(t)
	return s, a, b
}

// twinFilesRec is twinFiles with the recorder of their requests.
func twinFilesRec(t *testing.T) (*Store, *recorder, *Files, *Files) {
	t.Helper()
	s, rec := testStore(t, part)
	s2 := *s
	a, b := NewFiles(s), NewFiles(&s2)
	t.Cleanup(func() { a.Close(); b.Close() })
	return s, rec, a, b
}

// createTus creates upload id through f as the handler does: Create, then
// the first Save.
func createTus(t *testing.T, f *Files, length int64) *tus.Info {
	t.Helper()
	return createTusAs(t, f, length, "")
}

// createTusAs is createTus through CreateAs(name) when name is set (the
// handler under overwrite and reject), through Create otherwise.
func createTusAs(t *testing.T, f *Files, length int64, name string) *tus.Info {
	t.Helper()
	ctx := context.Background()
	info := &tus.Info{ID: tus.NewID(), Length: length, MetadataRaw: "filename dC5iaW4=", SentName: "t.bin", Name: "t.bin",
		Created: time.Now().UTC(), Expires: time.Now().Add(time.Hour).UTC()}
	create := func() error { return f.Create(ctx, info.ID) }
	if name != "" {
		create = func() error { return f.CreateAs(ctx, info.ID, name) }
	}
	if err := create(); err != nil {
		t.Fatal(err)
	}
	if err := f.TusStates(false).Save(ctx, info); err != nil {
		t.Fatal(err)
	}
	return info
}

// appendTus appends data as one PATCH through f does: Load, Append at the
// offset, writes of step bytes with a save every checkpoint bytes and at
// the end, the sha256 state carried in the Info.
func appendTus(t *testing.T, f *Files, id string, data []byte, step, checkpoint int) *tus.Info {
	t.Helper()
	ctx := context.Background()
	states := f.TusStates(false)
	info, err := states.Load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	h, err := tus.RestoreHash(info)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := f.Append(ctx, id, info.Offset)
	if err != nil {
		t.Fatal(err)
	}
	since := 0
	for off := 0; off < len(data); off += step {
		p := data[off:min(off+step, len(data))]
		if _, err := ap.Write(p); err != nil {
			t.Fatal(err)
		}
		h.Write(p)
		info.Offset += int64(len(p))
		if since += len(p); checkpoint > 0 && since >= checkpoint {
			if err := tus.SaveHash(info, h); err != nil {
				t.Fatal(err)
			}
			if err := states.Save(ctx, info); err != nil {
				t.Fatal(err)
			}
			since = 0
		}
	}
	if err := tus.SaveHash(info, h); err != nil {
		t.Fatal(err)
	}
	if err := states.Save(ctx, info); err != nil {
		t.Fatal(err)
	}
	if err := ap.Close(); err != nil {
		t.Fatal(err)
	}
	return info
}

// publish puts upload id under name through a batch of f, as the handler
// does once the upload is complete.
func publish(t *testing.T, f *Files, id, name string, policy store.Policy) (string, error) {
	t.Helper()
	b := f.NewBatch(policy, false)
	if _, err := b.Plan([]string{name}); err != nil {
		return "", err
	}
	stored, err := b.Put(0, f.TusFile(id))
	if err != nil {
		b.Undo()
		return "", err
	}
	b.Keep()
	return stored, nil
}

// TestFilesTusAcrossInstances appends one upload in several PATCHes that
// alternate between two adapters on one bucket, each from a fresh Load:
// the offset comes from the bucket, the sha256 carries over, the head is
// readable while it is in the tail, and the published object is
// byte-identical. Removal then leaves only the published object.
func TestFilesTusAcrossInstances(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
	}{
		{"several parts", 3*part + 12345},
		{"within the tail", part - 1},
		{"exactly one part", part},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, a, b := twinFiles(t)
			ctx := context.Background()
			data := randomBytes(tc.size, 21)
			info := createTus(t, a, int64(tc.size))
			chunk := 3<<20 + 1
			for i, off := 0, 0; off < tc.size; i++ {
				f := []*Files{a, b}[i%2]
				got, err := f.TusStates(false).Load(ctx, info.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.Offset != int64(off) {
					t.Fatalf("PATCH %d: offset %d, want %d", i, got.Offset, off)
				}
				end := min(off+chunk, tc.size)
				appendTus(t, f, info.ID, data[off:end], 64<<10, 1<<20)
				off = end
				if off < 4096 {
					head := make([]byte, 4096)
					n, err := b.ReadHead(ctx, info.ID, head)
					if err != nil || !bytes.Equal(head[:n], data[:off]) {
						t.Fatalf("ReadHead: %d bytes, %v", n, err)
					}
				}
			}
			final, err := b.TusStates(false).Load(ctx, info.ID)
			if err != nil {
				t.Fatal(err)
			}
			if final.Offset != int64(tc.size) || final.Name != "t.bin" || final.Metadata["filename"] != "t.bin" {
				t.Fatalf("loaded %+v", final)
			}
			h, err := tus.RestoreHash(final)
			if err != nil {
				t.Fatal(err)
			}
			if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
				t.Error("the carried sha256 differs from the data's")
			}
			put(t, s, "t.bin", []byte("taken"), Overwrite)
			if _, err := publish(t, a, info.ID, "t.bin", store.Reject); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("publishing over an object under reject: %v", err)
			}
			stored, err := publish(t, a, info.ID, "t.bin", store.Rename)
			if err != nil || stored != "t (1).bin" {
				t.Fatalf("publish: %q, %v", stored, err)
			}
			if got, _ := object(t, s, "t (1).bin"); !bytes.Equal(got, data) {
				t.Fatalf("published object: %d bytes, want %d", len(got), len(data))
			}
			// The handler marks it done; a HEAD at the other instance sees it.
			final.Done = true
			if err := a.TusStates(false).Save(ctx, final); err != nil {
				t.Fatal(err)
			}
			if got, err := b.TusStates(false).Load(ctx, final.ID); err != nil || !got.Done || got.Offset != int64(tc.size) {
				t.Fatalf("after publishing: %+v, %v", got, err)
			}
			if _, err := publish(t, b, info.ID, "u.bin", store.Overwrite); err == nil {
				t.Error("an upload was published twice")
			}
			if err := b.Remove(ctx, final.ID); err != nil {
				t.Fatal(err)
			}
			if err := b.TusStates(false).Delete(ctx, final.ID); err != nil {
				t.Fatal(err)
			}
			assertClean(t, s, "site/t (1).bin", "site/t.bin")
		})
	}
}

// TestFilesTusStale: two instances append to the same upload from the same
// offset; the one that saves second is refused (tus.ErrStale), also when
// it has a whole part to upload, and none of its bytes is ever in the
// upload.
func TestFilesTusStale(t *testing.T) {
	t.Parallel()
	s, a, b := twinFiles(t)
	ctx := context.Background()
	data := randomBytes(2*part+100, 22)
	info := createTus(t, a, int64(len(data)))
	appendTus(t, a, info.ID, data[:1000], 1000, 0)

	apA, err := a.Append(ctx, info.ID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	apB, err := b.Append(ctx, info.ID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	infoA, _ := a.TusStates(false).Load(ctx, info.ID)
	infoB, _ := b.TusStates(false).Load(ctx, info.ID)
	if _, err := apA.Write(data[1000 : part+500]); err != nil {
		t.Fatal(err)
	}
	infoA.Offset = part + 500
	if err := a.TusStates(false).Save(ctx, infoA); err != nil {
		t.Fatal(err)
	}
	// B wrote into its spool meanwhile: its save is refused.
	if _, err := apB.Write(randomBytes(2000, 9)); err != nil {
		t.Fatal(err)
	}
	infoB.Offset = 3000
	if err := b.TusStates(false).Save(ctx, infoB); !errors.Is(err, tus.ErrStale) {
		t.Fatalf("stale save: %v, want tus.ErrStale", err)
	}
	apB.Close()
	// A stale writer with a whole part is refused before it uploads it.
	apB, err = b.Append(ctx, info.ID, part+500)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apA.Write(data[part+500 : part+600]); err != nil {
		t.Fatal(err)
	}
	infoA.Offset = part + 600
	if err := a.TusStates(false).Save(ctx, infoA); err != nil {
		t.Fatal(err)
	}
	if _, err := apB.Write(randomBytes(part, 10)); !errors.Is(err, tus.ErrStale) {
		t.Fatalf("a stale writer's part: %v, want tus.ErrStale", err)
	}
	apB.Close()
	if _, err := b.Append(ctx, info.ID, 1000); !errors.Is(err, tus.ErrStale) {
		t.Fatalf("Append at an old offset: %v, want tus.ErrStale", err)
	}
	if _, err := apA.Write(data[part+600:]); err != nil {
		t.Fatal(err)
	}
	infoA.Offset = int64(len(data))
	if err := a.TusStates(false).Save(ctx, infoA); err != nil {
		t.Fatal(err)
	}
	apA.Close()
	got, err := b.TusStates(false).Load(ctx, info.ID)
	if err != nil || got.Offset != int64(len(data)) {
		t.Fatalf("offset %v, %v", got, err)
	}
	if _, err := publish(t, b, info.ID, "t.bin", store.Reject); err != nil {
		t.Fatal(err)
	}
	if obj, _ := object(t, s, "t.bin"); !bytes.Equal(obj, data) {
		t.Fatal("the published object is not the first writer's bytes")
	}
	if err := a.Remove(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.TusStates(false).Delete(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s, "site/t.bin")
}

// TestFilesTusRollback: a PATCH that checkpointed and is then taken back
// (its chunk went past the length) returns to the offset it started at;
// any other offset below what is committed is refused.
func TestFilesTusRollback(t *testing.T) {
	t.Parallel()
	s, a, _ := twinFiles(t)
	ctx := context.Background()
	data := randomBytes(3*part, 23)
	info := createTus(t, a, int64(len(data)))
	appendTus(t, a, info.ID, data[:100], 100, 0)
	states := a.TusStates(false)
	start, _ := states.Load(ctx, info.ID)
	cur := *start
	ap, err := a.Append(ctx, info.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ap.Write(randomBytes(part+10, 5)); err != nil {
		t.Fatal(err)
	}
	cur.Offset = part + 110
	if err := states.Save(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	back := *start
	if err := states.Save(ctx, &back); err != nil {
		t.Fatalf("taking the PATCH back: %v", err)
	}
	ap.Close()
	if got, _ := states.Load(ctx, info.ID); got.Offset != 100 {
		t.Fatalf("offset after the rollback: %d, want 100", got.Offset)
	}
	appendTus(t, a, info.ID, data[100:part+200], 4096, 0)
	ap, err = a.Append(ctx, info.ID, part+200)
	if err != nil {
		t.Fatal(err)
	}
	mid := *start
	mid.Offset = 50
	if err := states.Save(ctx, &mid); !errors.Is(err, tus.ErrStale) {
		t.Fatalf("a save below the committed offset: %v, want tus.ErrStale", err)
	}
	ap.Close()
	appendTus(t, a, info.ID, data[part+200:], 1<<20, 0)
	if _, err := publish(t, a, info.ID, "t.bin", store.Overwrite); err != nil {
		t.Fatal(err)
	}
	if obj, _ := object(t, s, "t.bin"); !bytes.Equal(obj, data) {
		t.Fatal("the published object differs")
	}
}

// TestFilesTusRemove: termination leaves nothing of the upload, also the
// part and tail of a writer that died before its save.
func TestFilesTusRemove(t *testing.T) {
	t.Parallel()
	s, a, b := twinFiles(t)
	ctx := context.Background()
	info := createTus(t, a, 4*part)
	appendTus(t, a, info.ID, randomBytes(part+7, 24), 1<<20, 0)
	ap, err := b.Append(ctx, info.ID, part+7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ap.Write(randomBytes(part, 25)); err != nil { // a part, never saved
		t.Fatal(err)
	}
	// The instance dies once its part is uploaded: no Close, no save.
	if err := ap.(*tusSession).waitParts(); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	delete(b.sessions, info.ID)
	b.mu.Unlock()
	ap.(*tusSession).removeSpool()
	// A writer that goes on after the removal: its save is refused and
	// leaves nothing.
	late, err := a.Append(ctx, info.ID, part+7)
	if err != nil {
		t.Fatal(err)
	}
	lateInfo, _ := a.TusStates(false).Load(ctx, info.ID)
	if err := a.Remove(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.TusStates(false).Delete(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := late.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	lateInfo.Offset += 4
	if err := a.TusStates(false).Save(ctx, lateInfo); !errors.Is(err, tus.ErrStale) {
		t.Fatalf("a save after the removal: %v, want tus.ErrStale", err)
	}
	late.Close()
	if _, err := a.TusStates(false).Load(ctx, info.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load after removal: %v", err)
	}
	assertClean(t, s)
}

// TestFilesTusConcat: complete partial uploads read back through Open (for
// a final upload), whether in parts or in the tail.
func TestFilesTusConcat(t *testing.T) {
	t.Parallel()
	s, a, b := twinFiles(t)
	ctx := context.Background()
	for _, size := range []int{part + 321, 1000, 0} {
		data := randomBytes(size, uint64(size))
		info := createTus(t, a, int64(size))
		appendTus(t, a, info.ID, data, 1<<20, 0)
		r, err := b.Open(ctx, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: read %d bytes, %v", size, len(got), err)
		}
		if err := b.Remove(ctx, info.ID); err != nil {
			t.Fatal(err)
		}
		if err := b.TusStates(false).Delete(ctx, info.ID); err != nil {
			t.Fatal(err)
		}
	}
	assertClean(t, s)
}

// TestFilesTusDeferredLength: an upload created without a length takes it
// at a later save; List names the uploads with a state.
func TestFilesTusDeferredLength(t *testing.T) {
	t.Parallel()
	_, a, b := twinFiles(t)
	ctx := context.Background()
	info := createTus(t, a, -1)
	appendTus(t, a, info.ID, randomBytes(10, 1), 10, 0)
	got, _ := b.TusStates(false).Load(ctx, info.ID)
	if got.Length != -1 || got.Offset != 10 {
		t.Fatalf("deferred: %+v", got)
	}
	if err := b.DeclareLength(ctx, info.ID, 20); err != nil {
		t.Fatal(err)
	}
	got.Length = 20
	if err := b.TusStates(false).Save(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.TusStates(false).Load(ctx, info.ID); got.Length != 20 {
		t.Fatalf("length %d, want 20", got.Length)
	}
	ids, err := a.TusStates(false).List(ctx)
	if err != nil || len(ids) != 1 || ids[0] != info.ID {
		t.Fatalf("List: %q, %v", ids, err)
	}
}

// TestSweepTusOrphans: a tail and a multipart upload of an upload that no
// state names are removed once old enough; a live upload is left alone.
func TestSweepTusOrphans(t *testing.T) {
	t.Parallel()
	s, a, _ := twinFiles(t)
	ctx := context.Background()
	info := createTus(t, a, 4*part)
	appendTus(t, a, info.ID, randomBytes(part+5, 26), 1<<20, 0)
	live := keys(t, s)
	gone := tus.NewID()
	if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(s.tusKey(gone, ".tail.x")),
		Body: strings.NewReader("left by a stale writer")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: aws.String(s.tusKey(gone, ""))}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.SweepTusOrphans(ctx, time.Hour, time.Now()); err != nil || n != 0 {
		t.Fatalf("a sweep of young orphans removed %d (%v); want none", n, err)
	}
	if n, err := s.SweepTusOrphans(ctx, time.Hour, time.Now().Add(2*time.Hour)); err != nil || n != 2 {
		t.Fatalf("the sweep removed %d (%v); want the tail and the multipart upload", n, err)
	}
	if got := keys(t, s); !slices.Equal(got, live) {
		t.Errorf("keys after the sweep: %q; want the live upload's %q", got, live)
	}
	if ups := openUploads(t, s); len(ups) != 1 || ups[0] != s.tusKey(info.ID, "") {
		t.Errorf("open multipart uploads after the sweep: %q; want the live upload's", ups)
	}
}

// TestFilesTusLost: a committed part overwritten behind the state's back
// (a stale writer in the window of its check) makes the upload lost
// (tus.ErrLost) at the next append, never mixed in.
func TestFilesTusLost(t *testing.T) {
	t.Parallel()
	s, a, b := twinFiles(t)
	ctx := context.Background()
	info := createTus(t, a, 3*part)
	appendTus(t, a, info.ID, randomBytes(part+10, 27), 1<<20, 0)
	u, err := s.getTus(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &s.bucket, Key: aws.String(s.tusKey(info.ID, "")), UploadId: &u.Info.UploadID,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(randomBytes(part, 98)), ContentLength: aws.Int64(part),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(ctx, info.ID, part+10); !errors.Is(err, tus.ErrLost) {
		t.Fatalf("Append over an overwritten part: %v, want tus.ErrLost", err)
	}
}

// TestFilesTusSaveLost: the answer to a state save that succeeded is lost;
// the save still counts (the state there is the one it sent), and the
// upload is published whole.
func TestFilesTusSaveLost(t *testing.T) {
	t.Parallel()
	s, rec := testStore(t, part)
	f := NewFiles(s)
	t.Cleanup(func() { f.Close() })
	data := randomBytes(part+100, 13)
	info := createTus(t, f, int64(len(data)))
	rec.reset()
	rec.mu.Lock()
	// The PutObjects of the save: the tail, then the state.
	rec.lose = func(op string, n int) bool { return op == "PutObject" && n == 2 }
	rec.mu.Unlock()
	appendTus(t, f, info.ID, data, 1<<20, 0)
	if got, err := f.TusStates(false).Load(context.Background(), info.ID); err != nil || got.Offset != int64(len(data)) {
		t.Fatalf("after the lost answer: %v, %+v", err, got)
	}
	if _, err := publish(t, f, info.ID, "z", store.Reject); err != nil {
		t.Fatal(err)
	}
	if got, _ := object(t, s, "z"); !bytes.Equal(got, data) {
		t.Fatal("published object differs")
	}
	if err := f.TusStates(false).Delete(context.Background(), info.ID); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s, "site/z")
}

// TestFilesTusInPlace: an upload made under its name (overwrite, reject)
// has its parts there and is completed there, with no server-side copy:
// nothing is visible under the name before it is published, a refusal
// under reject leaves the existing object and keeps the upload for
// another try, and the published object is byte-identical.
func TestFilesTusInPlace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		size   int
		policy store.Policy
	}{
		{"several parts, reject", 3*part + 12345, store.Reject},
		{"several parts, overwrite", 2*part + 1, store.Overwrite},
		{"exactly one part, reject", part, store.Reject},
		{"within the tail, reject", part - 1, store.Reject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec, a, b := twinFilesRec(t)
			ctx := context.Background()
			data := randomBytes(tc.size, 31)
			info := createTusAs(t, a, int64(tc.size), "t.bin")
			for i, off := 0, 0; off < tc.size; i++ {
				end := min(off+3<<20+1, tc.size)
				appendTus(t, []*Files{a, b}[i%2], info.ID, data[off:end], 64<<10, 1<<20)
				off = end
			}
			if _, ok := object(t, s, "t.bin"); ok {
				t.Fatal("the upload is visible under its name before it is published")
			}
			if ups := openUploads(t, s); tc.size >= part && !slices.Equal(ups, []string{s.Key("t.bin")}) {
				t.Fatalf("open multipart uploads %q; want one under the name", ups)
			}
			if tc.policy == store.Reject {
				put(t, s, "t.bin", []byte("taken"), Overwrite)
				if _, err := publish(t, b, info.ID, "t.bin", store.Reject); !errors.Is(err, fs.ErrExist) {
					t.Fatalf("publishing over an object under reject: %v", err)
				}
				if got, _ := object(t, s, "t.bin"); string(got) != "taken" {
					t.Fatalf("the refused upload replaced the object: %d bytes", len(got))
				}
				s.deleteKey(ctx, s.Key("t.bin"))
			}
			rec.reset()
			stored, err := publish(t, b, info.ID, "t.bin", tc.policy)
			if err != nil || stored != "t.bin" {
				t.Fatalf("publish: %q, %v", stored, err)
			}
			if got, _ := object(t, s, "t.bin"); !bytes.Equal(got, data) {
				t.Fatalf("published object: %d bytes, want %d", len(got), len(data))
			}
			// Less than a part is all in the tail object: that is copied.
			if n := rec.count("UploadPartCopy") + rec.count("CopyObject"); tc.size >= part && n != 0 {
				t.Errorf("publishing copied server-side (%d requests)", n)
			}
			if err := a.TusStates(false).Delete(ctx, info.ID); err != nil {
				t.Fatal(err)
			}
			assertClean(t, s, "site/t.bin")
		})
	}
}

// TestFilesTusInPlaceStale: a committed part of an upload made under its
// name, overwritten behind the state (a stale writer), fails the
// completion: nothing is published. Removal then leaves no object and no
// multipart upload.
func TestFilesTusInPlaceStale(t *testing.T) {
	t.Parallel()
	s, a, _ := twinFiles(t)
	ctx := context.Background()
	data := randomBytes(2*part+10, 32)
	info := createTusAs(t, a, int64(len(data)), "t.bin")
	appendTus(t, a, info.ID, data, 1<<20, 0)
	u, err := s.getTus(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &s.bucket, Key: aws.String(s.Key("t.bin")), UploadId: &u.Info.UploadID,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(randomBytes(part, 99)), ContentLength: aws.Int64(part),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := publish(t, a, info.ID, "t.bin", store.Overwrite); err == nil {
		t.Fatal("an upload with a part replaced behind its state was published")
	}
	if _, ok := object(t, s, "t.bin"); ok {
		t.Fatal("an object was published under the name")
	}
	if err := a.Remove(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.TusStates(false).Delete(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s)
}

// TestFilesTusInPlaceRemove: termination of an upload made under its name
// aborts its multipart upload there (the state names it), also when the
// writer that started it went on no further.
func TestFilesTusInPlaceRemove(t *testing.T) {
	t.Parallel()
	s, a, b := twinFiles(t)
	ctx := context.Background()
	info := createTusAs(t, a, 4*part, "t.bin")
	appendTus(t, a, info.ID, randomBytes(part+7, 33), 1<<20, 0)
	ap, err := b.Append(ctx, info.ID, part+7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ap.Write(randomBytes(part, 34)); err != nil { // a part, never saved
		t.Fatal(err)
	}
	if err := ap.Close(); err != nil {
		t.Fatal(err)
	}
	if ups := openUploads(t, s); !slices.Equal(ups, []string{s.Key("t.bin")}) {
		t.Fatalf("open multipart uploads %q; want one under the name", ups)
	}
	if err := b.Remove(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.TusStates(false).Delete(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s)
}

// TestSweepKeepsNamedTus: the sweep of stale writers leaves alone the
// multipart upload that a resumable upload's state names under its file's
// name, however old (a resumable upload keeps its own expiry), and aborts
// one under a name that nothing names.
func TestSweepKeepsNamedTus(t *testing.T) {
	t.Parallel()
	s, a, _ := twinFiles(t)
	ctx := context.Background()
	info := createTusAs(t, a, 4*part, "t.bin")
	appendTus(t, a, info.ID, randomBytes(part+7, 35), 1<<20, 0)
	if _, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: aws.String(s.Key("o.bin"))}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(48 * time.Hour)
	if swept, err := s.Sweep(ctx, time.Hour, later); err != nil || swept.Uploads != 1 {
		t.Fatalf("sweep: %+v, %v; want the orphan aborted", swept, err)
	}
	if _, err := s.SweepTusOrphans(ctx, time.Hour, later); err != nil {
		t.Fatal(err)
	}
	if ups := openUploads(t, s); !slices.Equal(ups, []string{s.Key("t.bin")}) {
		t.Fatalf("open multipart uploads after the sweeps: %q; want the live upload's", ups)
	}
	if got, err := a.TusStates(false).Load(ctx, info.ID); err != nil || got.Offset != part+7 {
		t.Fatalf("the upload after the sweeps: %+v, %v", got, err)
	}
	if _, err := a.Append(ctx, info.ID, part+7); err != nil {
		t.Fatalf("the upload after the sweeps: %v", err)
	}
}

// TestFilesTusInPlaceRenamed: an upload made under its name (overwrite or
// reject when it was created) that is published under rename (a reload
// changed the policy) while its name is taken cannot move to another name
// (its parts are under that one): the batch refuses it as a conflict
// (fs.ErrExist, a 409 for the client), and the object there stays.
func TestFilesTusInPlaceRenamed(t *testing.T) {
	t.Parallel()
	s, a, _ := twinFiles(t)
	data := randomBytes(part+10, 33)
	info := createTusAs(t, a, int64(len(data)), "r.bin")
	appendTus(t, a, info.ID, data, 1<<20, 0)
	put(t, s, "r.bin", []byte("taken"), Overwrite)
	if stored, err := publish(t, a, info.ID, "r.bin", store.Rename); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("publishing under rename over a taken name: %q, %v; want a conflict", stored, err)
	}
	if got, _ := object(t, s, "r.bin"); string(got) != "taken" {
		t.Fatalf("the object under the name: %d bytes, want the one there before", len(got))
	}
}
