package s3store

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"testing"

	"github.com/reflexupload/caddy-reflex-upload/internal/store"
)

// TestFilesTempAs: a temp made for its name (the overwrite and reject
// policies) is published where its parts went, with no server-side copy;
// a temp of unknown name (rename) is staged and copied.
func TestFilesTempAs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		policy store.Policy
		byName bool
		exists bool // an object has the name already
		racing bool // it lands between the plan and the publication
		copies int  // UploadPartCopy requests
		err    error
	}{
		{"overwrite", store.Overwrite, true, true, false, 0, nil},
		{"reject", store.Reject, true, false, false, 0, nil},
		{"reject, another object lands", store.Reject, true, false, true, 0, fs.ErrExist},
		{"rename", store.Rename, false, false, false, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec := testStore(t, part)
			f := NewFiles(s)
			defer f.Close()
			old := []byte("old")
			if tc.exists {
				put(t, s, "a.bin", old, Overwrite)
			}
			data := randomBytes(2*part+5, 21)
			var tmp store.Temp
			var err error
			if tc.byName {
				tmp, err = f.CreateTempAs(context.Background(), "a.bin")
			} else {
				tmp, err = f.CreateTemp(context.Background())
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tmp.Write(data); err != nil {
				t.Fatal(err)
			}
			b := f.NewBatch(tc.policy, true)
			if _, err := b.Plan([]string{"a.bin"}); err != nil {
				t.Fatal(err)
			}
			if tc.racing {
				put(t, s, "a.bin", old, Overwrite)
			}
			stored, err := b.Put(0, tmp.Name())
			if !errors.Is(err, tc.err) && !(tc.err == nil && err == nil) {
				t.Fatalf("Put: %v, want %v", err, tc.err)
			}
			b.Keep()
			want := data
			if tc.err != nil {
				want = old
			} else if stored != "a.bin" {
				t.Errorf("stored as %q", stored)
			}
			if got, _ := object(t, s, "a.bin"); !bytes.Equal(got, want) {
				t.Errorf("a.bin: %d bytes, want %d", len(got), len(want))
			}
			if n := rec.count("UploadPartCopy"); n != tc.copies {
				t.Errorf("UploadPartCopy sent %d times, want %d", n, tc.copies)
			}
			assertClean(t, s, "site/a.bin")
		})
	}
}
