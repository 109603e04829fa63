package reflexupload

import (
	"fmt"
	"mime"
	"path"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// sniffLen is how many leading bytes of a file are looked at to tell its
// type from its content (mimetype's default read limit).
const sniffLen = 3072

// acceptRules is the parsed accept option: the file types a site takes.
type acceptRules struct {
	any   bool            // no rules, or a "*/*" rule: every type is accepted
	exts  map[string]bool // ".pdf"
	types map[string]bool // "image/png", "image/*", and the types of the exts
}

// parseAccept parses react-dropzone-style accept entries.
func parseAccept(entries []string) (acceptRules, error) {
	a := acceptRules{any: len(entries) == 0, exts: map[string]bool{}, types: map[string]bool{}}
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "*" || e == "*/*":
			a.any = true
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
	return a, nil
}

// typeByExt gives the MIME type of an extension, without parameters.
func typeByExt(ext string) string {
	return bareType(mime.TypeByExtension(ext))
}

// bareType lowercases a media type and drops its parameters.
func bareType(t string) string {
	if i := strings.IndexByte(t, ';'); i >= 0 {
		t = t[:i]
	}
	return strings.ToLower(strings.TrimSpace(t))
}

// matchType reports whether a bare media type is accepted.
func (a acceptRules) matchType(t string) bool {
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
func (a acceptRules) matchSniffed(m *mimetype.MIME) bool {
	if a.matchType(bareType(m.String())) {
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
// client declared and the type its first bytes show (head, at most sniffLen
// bytes). All three must agree with the rules; a content type that the
// sniffer cannot name (plain text, unknown binary) defers to the name when
// the name's type is one the sniffer could not recognise either.
func (a acceptRules) check(name, declared string, sniffed *mimetype.MIME) error {
	if a.any {
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
	switch bareType(sniffed.String()) {
	case "application/octet-stream":
		if extType == "" || mimetype.Lookup(extType) == nil {
			return nil
		}
	case "text/plain":
		if strings.HasPrefix(extType, "text/") || extType == "" {
			return nil
		}
	}
	return fmt.Errorf("the content's type %q is not accepted", bareType(sniffed.String()))
}

// checkName is the part of check that needs no content: the name and the
// declared type. A resumable upload is checked on it at creation.
func (a acceptRules) checkName(name, declared string) error {
	if a.any {
		return nil
	}
	_, err := a.checkNameType(name, declared, nil)
	return err
}

// checkNameType checks the name and the declared type, and returns the type
// the name's extension gives (with sniffed, when known, naming extensions
// that the mime table lacks).
func (a acceptRules) checkNameType(name, declared string, sniffed *mimetype.MIME) (string, error) {
	ext := strings.ToLower(path.Ext(name))
	extType := typeByExt(ext)
	if extType == "" && ext != "" && sniffed != nil && sniffed.Extension() == ext {
		extType = bareType(sniffed.String()) // e.g. .heic, unknown to the mime table
	}
	if !a.exts[ext] && !a.matchType(extType) && (sniffed != nil || extType != "" || ext == "") {
		return "", fmt.Errorf("the name's type %q is not accepted", orUnknown(ext))
	}
	if declared = bareType(declared); !isGeneric(declared) && !a.matchType(declared) {
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
