package store

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

func openTest(t *testing.T) *Local {
	t.Helper()
	l, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// temp makes a temp file holding content.
func temp(t *testing.T, l *Local, content string) string {
	t.Helper()
	tmp, err := l.CreateTemp(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(tmp, content); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	return tmp.Name()
}

func read(t *testing.T, l *Local, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Dir(), name))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// TestPublish puts a file where one is stored under each policy, then
// undoes: the store is as it was.
func TestPublish(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy  Policy
		stored  string // the name given, "" for refused
		content string // at a.txt after Put
	}{
		{Overwrite, "a.txt", "new"},
		{Rename, "a (1).txt", "old"},
		{Reject, "", "old"},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			l := openTest(t)
			b := l.NewBatch(Overwrite, false)
			if _, err := b.Plan([]string{"a.txt"}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Put(0, temp(t, l, "old")); err != nil {
				t.Fatal(err)
			}
			b.Keep()

			b = l.NewBatch(tc.policy, true)
			_, err := b.Plan([]string{"a.txt"})
			if tc.stored == "" {
				if !errors.Is(err, fs.ErrExist) {
					t.Fatalf("Plan under reject: %v; want fs.ErrExist", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Put(0, temp(t, l, "new"))
			if err != nil || got != tc.stored {
				t.Fatalf("Put: %q, %v; want %q", got, err, tc.stored)
			}
			if c := read(t, l, "a.txt"); c != tc.content {
				t.Errorf("a.txt holds %q; want %q", c, tc.content)
			}
			b.Undo()
			if c := read(t, l, "a.txt"); c != "old" {
				t.Errorf("after Undo a.txt holds %q; want the old file back", c)
			}
			if tc.stored != "a.txt" && l.Exists(context.Background(), tc.stored) {
				t.Errorf("after Undo %s is still there", tc.stored)
			}
		})
	}
}

// TestPlanConflicts refuses a batch whose names clash with a folder or a
// file on a path, before anything moves.
func TestPlanConflicts(t *testing.T) {
	t.Parallel()
	l := openTest(t)
	if err := os.WriteFile(filepath.Join(l.Dir(), "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		names []string
		at    int // index refused, -1 for none
	}{
		{[]string{"ok.txt", "f/inside.txt"}, 1}, // a folder on the path is a file
		{[]string{"d", "d/y"}, 0},               // d is a folder another name needs
		{[]string{"x/a", "x/b"}, -1},
	} {
		i, err := l.NewBatch(Overwrite, false).Plan(tc.names)
		if (err != nil) != (tc.at >= 0) || (err != nil && i != tc.at) {
			t.Errorf("Plan(%q) = %d, %v; want refusal at %d", tc.names, i, err, tc.at)
		}
	}
}

// TestServingFS serves what is stored, and nothing private or outside.
func TestServingFS(t *testing.T) {
	t.Parallel()
	l := openTest(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644)
	os.WriteFile(filepath.Join(l.Dir(), "a.txt"), []byte("a"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(l.Dir(), "out"))
	os.Symlink("a.txt", filepath.Join(l.Dir(), "in"))
	os.WriteFile(filepath.Join(l.Dir(), Private, "p"), []byte("p"), 0o644)
	fsys := l.FS()
	for name, ok := range map[string]bool{"a.txt": true, "in": true, "out": false, Private + "/p": false, "../x": false} {
		_, err := fsys.Stat(filepath.Join(l.ServeRoot(), name))
		if (err == nil) != ok {
			t.Errorf("Stat %s: %v; want found=%v", name, err, ok)
		}
	}
}

// TestTusStates saves, lists, loads and deletes the state of an upload,
// and appends to its data from an offset, dropping what lies past it.
func TestTusStates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := openTest(t)
	st := l.TusStates(true)
	id := tus.NewID()
	info := &tus.Info{ID: id, Length: 10, Offset: 3, MetadataRaw: "filename YS50eHQ=", Created: time.Now()}
	if err := l.Create(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := st.Save(ctx, info); err != nil {
		t.Fatal(err)
	}
	if ids, err := st.List(ctx); err != nil || len(ids) != 1 || ids[0] != id {
		t.Fatalf("List: %v, %v", ids, err)
	}
	got, err := st.Load(ctx, id)
	if err != nil || got.Offset != 3 || got.Metadata["filename"] != "a.txt" {
		t.Fatalf("Load: %+v, %v", got, err)
	}
	a, err := l.Append(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(a, "abcdef")
	a.Close()
	a, _ = l.Append(ctx, id, 2) // "cdef" was never confirmed
	io.WriteString(a, "XY")
	a.Close()
	head := make([]byte, 8)
	if n, err := l.ReadHead(ctx, id, head); err != nil || string(head[:n]) != "abXY" {
		t.Errorf("ReadHead: %q, %v; want abXY", head[:n], err)
	}
	if err := st.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, id); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load after Delete: %v; want fs.ErrNotExist", err)
	}
	if !strings.Contains(tus.Extensions(l), "concatenation") {
		t.Error("the local store reads its data back: concatenation")
	}
}
