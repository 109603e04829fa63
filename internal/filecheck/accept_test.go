package filecheck

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/gabriel-vasile/mimetype"
)

// TestTypeChecks has a row per sentence of the README's "Type checks": a
// file passes accept on its name, its declared type and its content, each
// checked on its own.
func TestTypeChecks(t *testing.T) {
	png := pngBytes()
	html := []byte("<!doctype html><html><script>alert(1)</script></html>")
	pdf := []byte("%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n")
	text := []byte("just some words\nand more words\n")
	binary := bytes.Repeat([]byte{0x00, 0x9c, 0x17, 0xe3}, 64) // nothing the sniffer names
	csv := []byte("one\ntwo\nthree\n")                         // a csv of one column sniffs as text

	for _, tc := range []struct {
		sentence string // of the README, shortened
		accept   []string
		name     string
		declared string
		content  []byte
		ok       bool
	}{
		// "its name: the extension is listed (.pdf)"
		{"listed extension", []string{".pdf"}, "a.pdf", "application/pdf", pdf, true},
		{"unlisted extension", []string{".pdf"}, "a.png", "image/png", png, false},
		// "or the type of the extension matches a listed type or wildcard (a.png matches image/*)"
		{"extension's type matches a wildcard", []string{"image/*"}, "a.png", "image/png", png, true},
		{"extension's type matches a listed type", []string{"image/png"}, "a.png", "image/png", png, true},
		{"extension's type outside the wildcard", []string{"image/*"}, "a.pdf", "application/octet-stream", png, false},
		{"no extension", []string{"image/*"}, "a", "image/png", png, false},
		// "its declared Content-Type: application/octet-stream, none, or an accepted type"
		{"declared octet-stream", []string{"image/*"}, "a.png", "application/octet-stream", png, true},
		{"declared none", []string{"image/*"}, "a.png", "", png, true},
		{"declared accepted type", []string{"image/*"}, "a.png", "image/png; charset=binary", png, true},
		{"declared other type", []string{"image/*"}, "a.png", "text/html", png, false},
		// "its content: the type sniffed from its first 3 KiB (magic bytes) is accepted"
		{"sniffed type accepted", []string{".pdf"}, "a.pdf", "", pdf, true},
		{"sniffed type refused", []string{"image/*"}, "a.png", "image/png", pdf, false},
		// "HTML renamed cat.png is refused when only images are accepted"
		{"html renamed cat.png", []string{"image/*"}, "cat.png", "image/png", html, false},
		// "Content the sniffer cannot name (plain text, unknown binary) passes only when the
		// name's type is one the sniffer could not recognise either (a .csv of one column, a .md file)"
		{"one-column csv", []string{".csv"}, "a.csv", "text/csv", csv, true},
		{"markdown", []string{".md"}, "notes.md", "", text, true},
		{"text named as an image", []string{"image/*"}, "a.png", "", text, false},
		{"unknown binary named as an image", []string{"image/*"}, "a.png", "", binary, false},
		// "A listed extension that names no type of its own (.bin) takes any content"
		{"bin takes binary", []string{".bin"}, "blob.bin", "", binary, true},
		{"bin takes a png", []string{".bin"}, "blob.bin", "", png, true},
		// With no accept option every file passes.
		{"no rules", nil, "evil.html", "text/html", html, true},
	} {
		t.Run(tc.sentence, func(t *testing.T) {
			rules, err := ParseAccept(tc.accept)
			if err != nil {
				t.Fatal(err)
			}
			err = rules.check(tc.name, tc.declared, mimetype.Detect(tc.content))
			if (err == nil) != tc.ok {
				t.Errorf("accept %q, %q declared %q: error %v, want accepted=%v", tc.accept, tc.name, tc.declared, err, tc.ok)
			}
		})
	}
}

// pngBytes is a 1x1 PNG image.
func pngBytes() []byte {
	b, _ := hex.DecodeString("89504e470d0a1a0a0000000d4948445200000001000000010806000000" +
		"1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
	return b
}
