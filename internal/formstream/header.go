package formstream

import (
	"bytes"
	"errors"
	"fmt"
	"net/textproto"
)

// parseHeader parses a header block: lines that each end in CRLF, without
// the blank line. It follows net/textproto's ReadMIMEHeader.
func parseHeader(block []byte) (textproto.MIMEHeader, error) {
	h := make(textproto.MIMEHeader)
	if len(block) > 0 && (block[0] == ' ' || block[0] == '\t') {
		return nil, errors.New("header starts with white space")
	}
	var joined []byte // a folded header, joined
	for len(block) > 0 {
		i := bytes.Index(block, crlf)
		line := block[:i]
		block = block[i+2:]
		if bytes.IndexByte(line, ':') < 0 {
			return nil, fmt.Errorf("header line without a colon: %q", line)
		}
		kv := trim(line)
		if len(block) > 0 && (block[0] == ' ' || block[0] == '\t') {
			joined = append(joined[:0], kv...)
			for len(block) > 0 && (block[0] == ' ' || block[0] == '\t') {
				i := bytes.Index(block, crlf)
				joined = append(joined, ' ')
				joined = append(joined, trim(block[:i])...)
				block = block[i+2:]
			}
			kv = joined
		}
		k, v, _ := bytes.Cut(kv, []byte{':'})
		if !validKey(k) {
			return nil, fmt.Errorf("bad header key: %q", k)
		}
		for _, c := range v {
			if !validValueByte(c) {
				return nil, fmt.Errorf("bad header value: %q", v)
			}
		}
		key := textproto.CanonicalMIMEHeaderKey(string(k))
		h[key] = append(h[key], string(bytes.TrimLeft(v, " \t")))
	}
	return h, nil
}

var crlf = []byte("\r\n")

// trim returns b without leading and trailing spaces and tabs.
func trim(b []byte) []byte {
	return bytes.Trim(b, " \t")
}

// validKey reports whether k is a header key net/textproto accepts: token
// bytes (RFC 7230) and spaces, not empty.
func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c != ' ' && !isTokenByte(c) {
			return false
		}
	}
	return true
}

// isTokenByte reports whether c is a tchar of RFC 7230.
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c != 0 && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// validValueByte reports whether c may appear in a header value: VCHAR,
// obs-text, space or tab.
func validValueByte(c byte) bool {
	return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f)
}
