package filecheck

import (
	"fmt"
	"mime"
	"path"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// SniffLen is how many leading bytes of a file are looked at to tell its
// type from its content (mimetype's default read limit).
const SniffLen = 3072

// Accept is the parsed accept option: the file types a site takes. Its
// zero value, like ParseAccept(nil), accepts every type.
type Accept struct {
	some  bool            // rules that are not a "*/*": not every type is accepted
	exts  map[string]bool // ".pdf"
	types map[string]bool // "image/png", "image/*", and the types of the exts
}

// ParseAccept parses react-dropzone-style accept entries: MIME types
// ("image/png"), wildcards ("image/*") and extensions (".pdf"). No entry
// means any type.
func ParseAccept(entries []string) (Accept, error) {
	a := Accept{some: len(entries) > 0, exts: map[string]bool{}, types: map[string]bool{}}
	all := false
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "*" || e == "*/*":
			all = true
		case strings.HasPrefix(e, ".") && len(e) > 1 && !strings.ContainsAny(e, "/*"):
			a.exts[e] = true
			if t := typeByExt(e); t != "" {
				a.types[t] = true
			}
		case strings.Count(e, "/") == 1 && 'a' <= e[0] && e[0] <= 'z' && !strings.HasSuffix(e, "/") &&
			(!strings.Contains(e, "*") || strings.HasSuffix(e, "/*") && strings.Count(e, "*") == 1):
			if _, _, err := mime.ParseMediaType(e); err != nil && !strings.HasSuffix(e, "/*") {
				return a, fmt.Errorf("%q is not a MIME type: %v", e, err)
			}
			a.types[e] = true
		default:
			return a, fmt.Errorf("%q is not a MIME type (type/subtype, type/*) or an extension (.ext)", e)
		}
	}
	a.some = a.some && !all
	return a, nil
}

// typeByExt gives the MIME type of an extension, without parameters.
func typeByExt(ext string) string {
	return BareType(mime.TypeByExtension(ext))
}

// BareType lowercases a media type and drops its parameters.
func BareType(t string) string {
	if i := strings.IndexByte(t, ';'); i >= 0 {
		t = t[:i]
	}
	return strings.ToLower(strings.TrimSpace(t))
}

// matchType reports whether a bare media type is accepted.
func (a Accept) matchType(t string) bool {
	if t == "" {
		return false
	}
	if a.types[t] {
		return true
	}
	if i := strings.IndexByte(t, '/'); i > 0 {
		return a.types[t[:i]+"/*"]
	}
	return false
}

// matchSniffed reports whether a sniffed type, or one of its aliases, is
// accepted.
func (a Accept) matchSniffed(m *mimetype.MIME) bool {
	if a.matchType(BareType(m.String())) {
		return true
	}
	for t := range a.types {
		if !strings.HasSuffix(t, "/*") && m.Is(t) {
			return true
		}
	}
	return false
}

// isGeneric reports whether a declared type says nothing about the content.
func isGeneric(t string) bool {
	return t == "" || t == "application/octet-stream"
}

// check tells whether a file is accepted, judged on its name, the type the
// client declared and the type its first bytes show (head, at most SniffLen
// bytes). All three must agree with the rules; a content type that the
// sniffer cannot name (plain text, unknown binary) defers to the name when
// the name's type is one the sniffer could not recognise either.
func (a Accept) check(name, declared string, sniffed *mimetype.MIME) error {
	if !a.some {
		return nil
	}
	extType, err := a.checkNameType(name, declared, sniffed)
	if err != nil {
		return err
	}
	if a.matchSniffed(sniffed) {
		return nil
	}
	if isGeneric(extType) && a.exts[strings.ToLower(path.Ext(name))] {
		return nil // an accepted extension that names no type (.bin): any content is that
	}
	switch BareType(sniffed.String()) {
	case "application/octet-stream":
		if extType == "" || mimetype.Lookup(extType) == nil {
			return nil
		}
	case "text/plain":
		if strings.HasPrefix(extType, "text/") || extType == "" {
			return nil
		}
	}
	return fmt.Errorf("the content's type %q is not accepted", BareType(sniffed.String()))
}

// checkName is the part of check that needs no content: the name and the
// declared type. A resumable upload is checked on it at creation.
func (a Accept) checkName(name, declared string) error {
	if !a.some {
		return nil
	}
	_, err := a.checkNameType(name, declared, nil)
	return err
}

// checkNameType checks the name and the declared type, and returns the type
// the name's extension gives (with sniffed, when known, naming extensions
// that the mime table lacks).
func (a Accept) checkNameType(name, declared string, sniffed *mimetype.MIME) (string, error) {
	ext := strings.ToLower(path.Ext(name))
	extType := typeByExt(ext)
	if extType == "" && ext != "" && sniffed != nil && sniffed.Extension() == ext {
		extType = BareType(sniffed.String()) // e.g. .heic, unknown to the mime table
	}
	if !a.exts[ext] && !a.matchType(extType) && (sniffed != nil || extType != "" || ext == "") {
		return "", fmt.Errorf("the name's type %q is not accepted", orUnknown(ext))
	}
	if declared = BareType(declared); !isGeneric(declared) && !a.matchType(declared) {
		return "", fmt.Errorf("the declared type %q is not accepted", declared)
	}
	return extType, nil
}

func orUnknown(ext string) string {
	if ext == "" {
		return "(no extension)"
	}
	return ext
}
