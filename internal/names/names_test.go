package names

import (
	"errors"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

func TestSanitizeFilename(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" means refused
		err  error
	}{
		{in: "a.png", want: "a.png"},
		{in: "photos/2026/a.png", want: "photos/2026/a.png"},
		{in: "a/./b/../c", want: "a/b/c"},
		{in: "../../x", want: "x"},
		{in: `..\secret.txt`, want: "secret.txt"},
		{in: `C:\Users\n\r.csv`, want: "r.csv"},
		{in: `c:relative.txt`, want: "relative.txt"},
		{in: `\\server\share\f.txt`, want: "f.txt"},
		{in: "/abs/path", want: "path"},
		{in: "A:.", err: ErrEmpty},
		{in: "/dir/a.png", want: "a.png"},
		{in: "./a.png", want: "a.png"},
		{in: "dir/sub/a.png", want: "dir/sub/a.png"},
		{in: "a//b///c.txt", want: "a/b/c.txt"},
		{in: "dir/", want: "dir"},
		{in: "...", want: "..."},
		{in: "日本語/ファイル.txt", want: "日本語/ファイル.txt"},
		{in: ".", err: ErrEmpty},
		{in: "..", err: ErrEmpty},
		{in: "/..", err: ErrEmpty},
		{in: "../..", err: ErrEmpty},
		{in: "", err: ErrEmpty},
		{in: "/", err: ErrEmpty},
		{in: `C:\`, err: ErrEmpty},
		{in: "a\x00.png", err: ErrControl},
		{in: "a\n.png", err: ErrControl},
		{in: "C:\\Users\n\r.csv", err: ErrControl}, // real control characters this time
		{in: "tab\there", err: ErrControl},
		{in: "del\x7f", err: ErrControl},
		{in: "c1\u0085", err: ErrControl},
		{in: "bad\xffutf8", err: ErrEncoding},
		{in: ".uploads/x", err: ErrReserved},
		{in: ".UPLOADS/x", err: ErrReserved},
		{in: "../.uploads/tmp-1", err: ErrReserved},
		{in: ".uploads", err: ErrReserved},
		{in: "x/.uploads/y", want: "x/.uploads/y"}, // only the root's own private folder is reserved
		{in: strings.Repeat("a", 256), err: ErrTooLong},
		{in: strings.Repeat("a/", 600) + "b", err: ErrTooLong},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Sanitize(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || got != "" {
					t.Fatalf("Sanitize(%q) = %q, %v; want refusal %v", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Sanitize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// FuzzSanitizeFilename checks the property the storage relies on: a name is
// refused, or it is a clean relative path that stays inside the root.
func FuzzSanitizeFilename(f *testing.F) {
	for _, s := range []string{
		"../../x", `..\secret.txt`, `C:\Users\n\r.csv`, "/abs/path", "a/./b/../c", "photos/2026/a.png",
		".", "..", "/..", "", "a\x00b", ".uploads/x", `\\?\C:\x`, "a/../../b", "....//....//etc/passwd",
		"%2e%2e/x", "\u202egnp.exe", "x/" + strings.Repeat("y", 300),
	} {
		f.Add(s)
	}
	root := filepath.FromSlash("/srv/uploads")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Sanitize(in)
		if err != nil {
			if got != "" {
				t.Fatalf("refused %q but returned %q", in, got)
			}
			return
		}
		if got == "" || path.IsAbs(got) || path.Clean(got) != got || strings.Contains(got, `\`) {
			t.Fatalf("Sanitize(%q) = %q: not a clean relative path", in, got)
		}
		for seg := range strings.SplitSeq(got, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("Sanitize(%q) = %q: bad segment %q", in, got, seg)
			}
		}
		if first, _, _ := strings.Cut(got, "/"); strings.EqualFold(first, Reserved) {
			t.Fatalf("Sanitize(%q) = %q: in the private folder", in, got)
		}
		if joined := filepath.Join(root, got); !strings.HasPrefix(joined, root+string(filepath.Separator)) {
			t.Fatalf("Sanitize(%q) = %q: %q leaves the root", in, got, joined)
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("Sanitize(%q) = %q: control character", in, got)
			}
		}
	})
}

func TestBrowserFileName(t *testing.T) {
	for in, want := range map[string]string{
		"say %22hi%22.txt": `say "hi".txt`,
		"a%0Ab.txt":        "a\nb.txt",
		"100%.txt":         "100%.txt",
		"plain.txt":        "plain.txt",
		"%2e%2e/x":         "%2e%2e/x", // only the form encoding's own escapes are undone
	} {
		if got := UndoBrowserEscapes(in); got != want {
			t.Errorf("UndoBrowserEscapes(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestSentFileName reads the file name of a Content-Disposition as browsers
// write it (no backslash escapes) and as Python's parsers behind Reflex read
// it: a backslash escapes only a backslash or a double quote.
func TestSentFileName(t *testing.T) {
	for _, tc := range []struct{ disposition, name, stored string }{
		{`form-data; name="files"; filename="back\(1).png"`, `back\(1).png`, "back/(1).png"},
		{`form-data; name="files"; filename="C:\Users\n\r.csv"`, `C:\Users\n\r.csv`, "r.csv"},
		{`form-data; name="files"; filename="a\\b.txt"`, `a\b.txt`, "a/b.txt"},
		{`form-data; name="files"; filename="say \"hi\".txt"`, `say "hi".txt`, `say "hi".txt`},
		{`form-data; name="files"; filename="say %22hi%22.txt"`, `say "hi".txt`, `say "hi".txt`},
		{`form-data; name="fi\(les"; filename="x\;y\=z"`, `x\;y\=z`, `x/;y/=z`},
		{`form-data; name="files"; filename*=UTF-8''%E6%97%A5%5C.txt`, `日\.txt`, "日/.txt"},
		{`form-data; name="files"; filename=plain.txt`, "plain.txt", "plain.txt"},
		{`form-data; name="files"`, "", ""},
		{`form-data; name="files"; filename="unterminated`, "", ""},
	} {
		got := FromDisposition(tc.disposition)
		if got != tc.name {
			t.Errorf("FromDisposition(%s) = %q; want %q", tc.disposition, got, tc.name)
			continue
		}
		if stored, _ := Sanitize(got); stored != tc.stored {
			t.Errorf("%q is stored as %q; want %q", got, stored, tc.stored)
		}
	}
}

func TestHasDotDot(t *testing.T) {
	for in, want := range map[string]bool{
		"a/../b":     true,
		`a\..\b`:     true,
		"..":         true,
		"../x":       true,
		"a/..b/c":    false,
		"...":        false,
		"a/b.png":    false,
		"..a/b..":    false,
		`dir\..`:     true,
		"/abs/../x/": true,
	} {
		if got := HasDotDot(in); got != want {
			t.Errorf("HasDotDot(%q) = %v; want %v", in, got, want)
		}
	}
}
