package reflexupload

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// TestConflictsWithinRequest: names of one request that clash with each
// other (a file and a folder of the same name) are refused before anything
// moves, under every policy that cannot store them both; rename stores the
// file under another name.
func TestConflictsWithinRequest(t *testing.T) {
	t.Parallel()
	parts := []part{
		{name: "c.txt", data: []byte("new c")},
		{name: "d", data: []byte("file d")},
		{name: "d/y", data: []byte("y")},
	}
	for _, policy := range []string{conflictOverwrite, conflictReject} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			if err := os.WriteFile(filepath.Join(root, "c.txt"), []byte("old c"), 0o644); err != nil {
				t.Fatal(err)
			}
			url := serveHandler(t, &Handler{Root: root, OnConflict: policy}, nil)
			before := tree(t, root)
			res, body := postTo(t, url+"/_upload", nil, parts[1:]...)
			assertAnswer(t, res, body, http.StatusConflict, `{"detail":"a file or folder with this name exists already","code":"file-exists","file":"d"}`)
			assertTree(t, root, before)
			if policy == conflictOverwrite {
				res, body = postTo(t, url+"/_upload", nil, parts...)
				assertAnswer(t, res, body, http.StatusConflict, `{"detail":"a file or folder with this name exists already","code":"file-exists","file":"d"}`)
				assertTree(t, root, before)
			}
			assertNoTemps(t, root)
		})
	}
	t.Run(conflictRename, func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		if err := os.WriteFile(filepath.Join(root, "c.txt"), []byte("old c"), 0o644); err != nil {
			t.Fatal(err)
		}
		url := serveHandler(t, &Handler{Root: root, OnConflict: conflictRename, Hash: hashNone}, nil)
		res, body := postTo(t, url+"/_upload", http.Header{"X-Progress-Id": {"r1"}}, parts...)
		assertAnswer(t, res, body, http.StatusCreated, `{"upload_id":"r1","files":[`+
			`{"field":"files","name":"c (1).txt","path":"c (1).txt","url":"/_upload/c%20%281%29.txt","size":5,"content_type":"text/plain; charset=utf-8"},`+
			`{"field":"files","name":"d (1)","path":"d (1)","url":"/_upload/d%20%281%29","size":6,"content_type":"text/plain; charset=utf-8"},`+
			`{"field":"files","name":"y","path":"d/y","url":"/_upload/d/y","size":1,"content_type":"text/plain; charset=utf-8"}],"fields":{}}`)
		assertTree(t, root, map[string]string{"c.txt": "file:old c", "c (1).txt": "file:new c", "d (1)": "file:file d", "d": "dir", "d/y": "file:y"})
		assertNoTemps(t, root)
	})
}

// TestCommitAllOrNothing is a property test of the conflict policies: random
// sets of names in one request (prefixes of each other, repeats) over a
// random root (files and folders). A refusal leaves the root exactly as it
// was; a success stores every file with its bytes and changes nothing else
// (but the files that overwrite replaced). Whether a request is refused is
// checked against the rules of the README.
func TestCommitAllOrNothing(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{conflictOverwrite, conflictRename, conflictReject} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			url := serveHandler(t, &Handler{Root: root, OnConflict: policy, Fsync: new(bool)}, nil)
			seed := uint64(len(policy))
			rng := rand.New(rand.NewPCG(seed, 2026))
			segs := []string{"a", "b", "c.txt"}
			randomName := func() string {
				n := make([]string, 1+rng.IntN(3))
				for i := range n {
					n[i] = segs[rng.IntN(len(segs))]
				}
				return strings.Join(n, "/")
			}
			refusals, successes := 0, 0
			for iter := range 120 {
				clearRoot(t, root)
				for range rng.IntN(5) {
					p := filepath.Join(root, filepath.FromSlash(randomName()))
					if rng.IntN(2) == 0 {
						_ = os.MkdirAll(p, 0o755)
					} else if os.MkdirAll(filepath.Dir(p), 0o755) == nil {
						_ = os.WriteFile(p, []byte("old "+p), 0o644)
					}
				}
				var names []string
				var parts []part
				for k := range 1 + rng.IntN(4) {
					n := randomName()
					if k > 0 && rng.IntN(4) == 0 {
						n = names[rng.IntN(k)] // a repeat
					}
					names = append(names, n)
					parts = append(parts, part{name: n, data: fmt.Appendf(nil, "%d-%d", iter, k)})
				}
				before := tree(t, root)
				res, body := postTo(t, url+"/_upload", nil, parts...)
				why := fmt.Sprintf("iteration %d: %q over %v: %d %s", iter, names, before, res.StatusCode, body)
				refuse := wantRefused(policy, before, names)
				switch {
				case res.StatusCode == http.StatusConflict && refuse:
					refusals++
					if !bytes.Contains(body, []byte(`"code":"file-exists"`)) {
						t.Fatalf("%s: not file-exists", why)
					}
					if after := tree(t, root); fmt.Sprint(after) != fmt.Sprint(before) {
						t.Fatalf("%s: the refused request changed the root to %v", why, after)
					}
				case res.StatusCode == http.StatusCreated && !refuse:
					successes++
					want := copyTree(before)
					stored := decode[struct {
						Files []struct{ Path string }
					}](t, body)
					for k, f := range stored.Files {
						if policy != conflictRename && f.Path != names[k] {
							t.Fatalf("%s: file %d stored at %q", why, k, f.Path)
						}
						if policy == conflictRename && before[f.Path] != "" {
							t.Fatalf("%s: rename stored over %q", why, f.Path)
						}
						want[f.Path] = "file:" + string(parts[k].data)
						for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
							want[d] = "dir"
						}
					}
					if after := tree(t, root); fmt.Sprint(after) != fmt.Sprint(want) {
						t.Fatalf("%s: the root is\n%v\nwant\n%v", why, after, want)
					}
				default:
					t.Fatalf("%s: want refused=%v", why, refuse)
				}
				assertNoTemps(t, root)
			}
			if refusals == 0 || successes == 0 {
				t.Fatalf("%d refusals and %d successes: the cases do not cover both", refusals, successes)
			}
		})
	}
}

// wantRefused says whether names, in one request over the root described by
// disk, must be refused under the policy (the README's rules).
func wantRefused(policy string, disk map[string]string, names []string) bool {
	folders := map[string]bool{}
	for _, n := range names {
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			folders[d] = true
			if e, ok := disk[d]; ok && e != "dir" {
				return true // a folder it needs is a file: every policy
			}
		}
	}
	seen := map[string]bool{}
	for _, n := range names {
		asDir := folders[n] || disk[n] == "dir"
		switch policy {
		case conflictOverwrite:
			if asDir {
				return true
			}
		case conflictReject:
			if asDir || disk[n] != "" || seen[n] {
				return true
			}
		}
		seen[n] = true
	}
	return false
}

func copyTree(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// clearRoot removes everything under root but the private folder.
func clearRoot(t *testing.T, root string) {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != reservedDir {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestForwardRefusalGivesBack: when the app refuses a forwarded upload, the
// files it replaced under overwrite come back, and the folders it made go,
// for a standard upload and for a completed resumable one.
func TestForwardRefusalGivesBack(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for name, content := range map[string]string{"c.txt": "old c", "keep/k.txt": "k"} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	url := serveHandler(t, &Handler{Root: root, Mode: modeForward}, func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte("app says no"))
		return nil
	})
	before := tree(t, root)

	res, body := postTo(t, url+"/_upload", nil,
		part{name: "c.txt", data: []byte("new c")}, part{name: "c.txt", data: []byte("newer c")},
		part{name: "new/dir/n.txt", data: []byte("n")}, part{name: "keep/k2.txt", data: []byte("k2")})
	if res.StatusCode != http.StatusConflict || string(body) != "app says no" {
		t.Fatalf("the app's refusal is not passed back: %d %q", res.StatusCode, body)
	}
	assertTree(t, root, before)
	assertNoTemps(t, root)

	req, err := http.NewRequest(http.MethodPost, url+"/_upload/.uploads", strings.NewReader("tus c"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", tusContentType)
	req.Header.Set("Upload-Length", "5")
	req.Header.Set("Upload-Metadata", "filename "+b64("c.txt"))
	res, body = do(t, req)
	if res.StatusCode != http.StatusConflict || string(body) != "app says no" {
		t.Fatalf("the app's refusal of a resumable upload is not passed back: %d %q", res.StatusCode, body)
	}
	assertTree(t, root, before)
	entries, _ := os.ReadDir(filepath.Join(root, reservedDir))
	if len(entries) != 1 {
		t.Fatalf("left in the private folder: %d entries", len(entries))
	}
}

// TestForwardRefusalKeepsNewerFile: while the app is asked about an upload
// that overwrote c.txt, another upload replaces c.txt; the app's refusal of
// the first then leaves the newer file alone.
func TestForwardRefusalKeepsNewerFile(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "c.txt"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := serveHandler(t, &Handler{Root: root, Mode: modeForward}, func(w http.ResponseWriter, r *http.Request) error {
		// Another request's upload lands meanwhile (a temp file renamed in).
		tmp := filepath.Join(root, reservedDir, "other")
		if err := os.WriteFile(tmp, []byte("newer"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(root, "c.txt")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusConflict)
		return nil
	})
	res, body := postTo(t, url+"/_upload", nil, part{name: "c.txt", data: []byte("refused")}, part{name: "d/e.txt", data: []byte("e")})
	if res.StatusCode != http.StatusConflict {
		t.Fatalf("the app's refusal is not passed back: %d %q", res.StatusCode, body)
	}
	assertTree(t, root, map[string]string{"c.txt": "file:newer"})
	assertNoTemps(t, root)
}
