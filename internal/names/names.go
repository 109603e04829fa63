// Package names holds the rules for the file names clients send: how a
// multipart part's name is read (browsers' escapes, Reflex's quoting), how
// it is sanitised into a relative path under the upload root, and the
// stricter rule of track mode, where the app gets the name as sent.
package names

import (
	"errors"
	"mime"
	"strings"
	"unicode/utf8"
)

// Reserved is the module's private folder inside the upload root (temp
// files, tus state). No stored path may start with it and it is never served.
const Reserved = ".uploads"

// Limits on a sanitised name, so that a hostile name fails as a client error
// here rather than as an operating-system error later.
const (
	MaxNameBytes    = 1024 // the whole relative path
	MaxSegmentBytes = 255  // one folder or file name (NAME_MAX on Linux)
)

// Reasons a client-supplied file name is refused.
var (
	ErrEmpty    = errors.New("file name is empty after sanitising")
	ErrControl  = errors.New("file name holds NUL or control characters")
	ErrEncoding = errors.New("file name is not valid UTF-8")
	ErrReserved = errors.New("file name starts with the reserved folder " + Reserved)
	ErrTooLong  = errors.New("file name is too long")
)

// Sanitize turns a client-supplied file name into a clean relative
// slash-separated path under the upload root, or refuses it.
//
// It follows Reflex: a backslash is a separator; an absolute path or one with
// a drive letter keeps only its base name; empty, "." and ".." segments are
// dropped (not resolved), so relative folders such as "photos/2026/a.png"
// are kept. It is then stricter: NUL, control characters and invalid UTF-8
// are refused, as are names that end up empty, start with the reserved
// folder, or exceed the length limits. The result never starts with "/",
// never holds a "." or ".." segment, and so never leaves the root.
func Sanitize(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", ErrEncoding
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", ErrControl
		}
	}
	name = strings.ReplaceAll(name, `\`, "/")
	absolute := strings.HasPrefix(name, "/")
	if hasDriveLetter(name) {
		absolute, name = true, name[2:]
	}

	var kept []string
	for seg := range strings.SplitSeq(name, "/") {
		switch seg {
		case "", ".", "..":
			continue
		}
		kept = append(kept, seg)
	}
	if absolute && len(kept) > 0 {
		kept = kept[len(kept)-1:]
	}
	if len(kept) == 0 {
		return "", ErrEmpty
	}
	if strings.EqualFold(kept[0], Reserved) {
		return "", ErrReserved
	}
	for _, seg := range kept {
		if len(seg) > MaxSegmentBytes {
			return "", ErrTooLong
		}
	}
	clean := strings.Join(kept, "/")
	if len(clean) > MaxNameBytes {
		return "", ErrTooLong
	}
	return clean, nil
}

// hasDriveLetter reports whether s starts with a Windows drive such as "C:".
func hasDriveLetter(s string) bool {
	return len(s) >= 2 && s[1] == ':' && ('a' <= s[0]|0x20 && s[0]|0x20 <= 'z')
}

// FromDisposition gives the file name of a multipart part as the sender meant
// it, from the part's Content-Disposition header, or "" if it has none.
//
// Browsers put a file name between quotes as it is, with no backslash
// escapes: "back\(1).png" is sent as filename="back\(1).png". Go's
// mime.ParseMediaType reads a backslash before a special character as an
// escape and drops it ("back(1).png"), where Reflex's server (Python's
// email.utils.unquote) keeps it and then treats it as a separator. So a
// backslash inside quotes is an escape only before another backslash or a
// double quote, as there; every other backslash is kept as a character. The
// form encoding's own escapes are then undone (UndoBrowserEscapes).
func FromDisposition(disposition string) string {
	if strings.Contains(disposition, `\`) {
		disposition = keepBackslashes(disposition)
	}
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return ""
	}
	return UndoBrowserEscapes(params["filename"])
}

// keepBackslashes doubles every backslash inside a quoted string that does
// not escape a backslash or a double quote, so that mime.ParseMediaType
// keeps it as a character.
func keepBackslashes(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			quoted = !quoted
		case c == '\\' && quoted:
			if i+1 < len(s) && (s[i+1] == '\\' || s[i+1] == '"') {
				b.WriteByte(c)
				i++
				c = s[i]
			} else {
				b.WriteByte('\\')
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// UndoBrowserEscapes undoes the one escape browsers apply to the file name of
// a multipart part: the HTML standard's form encoding writes '"' as %22 (and
// CR and LF as %0D and %0A, which the sanitiser refuses either way). A name
// that really holds "%22" cannot be told apart, and comes out with '"'.
func UndoBrowserEscapes(name string) string {
	if !strings.Contains(name, "%") {
		return name
	}
	return strings.NewReplacer("%22", `"`, "%0D", "\r", "%0A", "\n", "%0d", "\r", "%0a", "\n").Replace(name)
}

// HasDotDot reports whether a slash- or backslash-separated name has a ".."
// segment. Track mode refuses such a name: the app gets the name as sent,
// and a ".." in it must not reach it.
func HasDotDot(name string) bool {
	for seg := range strings.FieldsFuncSeq(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return true
		}
	}
	return false
}
