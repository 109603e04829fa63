package tus

import (
	"encoding/base64"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseMetadata(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want map[string]string // nil: refused
	}{
		{"", map[string]string{}},
		{"  ", map[string]string{}},
		{"filename " + b64("a.png"), map[string]string{"filename": "a.png"}},
		{"filename " + b64("a.png") + ",filetype " + b64("image/png") + ",empty", map[string]string{"filename": "a.png", "filetype": "image/png", "empty": ""}},
		{" filename  " + b64("x") + " ", map[string]string{"filename": "x"}},
		{"filename " + b64("a") + ",filename " + b64("b"), nil},
		{"filename !!!", nil},
		{",", nil},
		{"a\tb " + b64("x"), nil},
	} {
		got, err := ParseMetadata(tc.raw)
		if tc.want == nil {
			if err == nil {
				t.Errorf("ParseMetadata(%q) = %v; want an error", tc.raw, got)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("ParseMetadata(%q) = %v, %v; want %v", tc.raw, got, err, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("ParseMetadata(%q)[%q] = %q; want %q", tc.raw, k, got[k], v)
			}
		}
	}
}

// FuzzParseMetadata: a header is refused, or every key it gives is
// non-empty without blanks, and formatting the result again parses to the
// same map.
func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{"", "filename " + b64("a.png"), "a " + b64("1") + ",b", "a,a", "k !", " , ", "a\tb x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		md, err := ParseMetadata(raw)
		if err != nil {
			return
		}
		var pairs []string
		for k, v := range md {
			if k == "" || strings.ContainsAny(k, " \t,") {
				t.Fatalf("ParseMetadata(%q) gave the key %q", raw, k)
			}
			pairs = append(pairs, k+" "+b64(v))
		}
		again, err := ParseMetadata(strings.Join(pairs, ","))
		if err != nil || len(again) != len(md) {
			t.Fatalf("ParseMetadata(%q) = %v; formatted again: %v, %v", raw, md, again, err)
		}
		for k, v := range md {
			if again[k] != v {
				t.Fatalf("round trip of %q: %q is %q, was %q", raw, k, again[k], v)
			}
		}
	})
}

func TestParseChecksum(t *testing.T) {
	sum := func(c *Checksum, s string) bool { c.Write([]byte(s)); return c.OK() }
	for _, tc := range []struct {
		header string
		ok     bool // parsed
		data   string
		match  bool
	}{
		{"sha1 " + "qvTGHdzF6KLavt4PO0gs2a6pQ00=", true, "hello", true},
		{"sha256 " + "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=", true, "hello", true},
		{"md5 " + "XUFAKrxLKna5cZ2REBfFkg==", true, "hello", true},
		{"md5 " + "XUFAKrxLKna5cZ2REBfFkg==", true, "hellO", false},
		{"crc32 AAAAAA==", false, "", false},
		{"sha1 not-base64", false, "", false},
		{"sha1 " + b64("short"), false, "", false},
		{"sha1", false, "", false},
	} {
		c, err := ParseChecksum(tc.header)
		if (err == nil) != tc.ok {
			t.Errorf("ParseChecksum(%q): %v; want ok=%v", tc.header, err, tc.ok)
			continue
		}
		if tc.ok && sum(c, tc.data) != tc.match {
			t.Errorf("ParseChecksum(%q) over %q: match %v; want %v", tc.header, tc.data, !tc.match, tc.match)
		}
	}
	if c, err := ParseChecksum(""); c != nil || err != nil {
		t.Errorf("no header: %v, %v", c, err)
	}
}

// FuzzParseChecksum: a header is refused, or it names a known algorithm
// and a digest of that algorithm's size.
func FuzzParseChecksum(f *testing.F) {
	for _, s := range []string{"sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=", "md5 XUFAKrxLKna5cZ2REBfFkg==", "sha256 x", "crc32 AA==", " ", "sha1  "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		c, err := ParseChecksum(header)
		if err != nil || c == nil {
			return
		}
		algo, _, _ := strings.Cut(header, " ")
		if !strings.Contains(","+Checksums+",", ","+algo+",") {
			t.Fatalf("ParseChecksum(%q) accepted the algorithm %q", header, algo)
		}
		if len(c.want) != c.Size() {
			t.Fatalf("ParseChecksum(%q): digest of %d bytes for a %d-byte hash", header, len(c.want), c.Size())
		}
	})
}

func TestParseSize(t *testing.T) {
	for v, want := range map[string]int64{"0": 0, "10": 10, "007": 7, "9223372036854775807": 1<<63 - 1} {
		if n, ok := ParseSize(v); !ok || n != want {
			t.Errorf("ParseSize(%q) = %d, %v", v, n, ok)
		}
	}
	for _, v := range []string{"", "+10", "-1", "1e3", "0x10", " 1", "1 ", "9223372036854775808"} {
		if _, ok := ParseSize(v); ok {
			t.Errorf("ParseSize(%q) accepted", v)
		}
	}
}

func TestParseConcat(t *testing.T) {
	if c, err := ParseConcat("partial"); err != nil || !c.Partial || c.Final() {
		t.Errorf("partial: %+v, %v", c, err)
	}
	if c, err := ParseConcat("final;/a/1 /a/2"); err != nil || !c.Final() || len(c.Parts) != 2 {
		t.Errorf("final: %+v, %v", c, err)
	}
	if c, err := ParseConcat(""); err != nil || c.Partial || c.Final() {
		t.Errorf("none: %+v, %v", c, err)
	}
	for _, v := range []string{"final;", "final; ", "partial;x", "whole"} {
		if _, err := ParseConcat(v); err == nil {
			t.Errorf("ParseConcat(%q) accepted", v)
		}
	}
}

type dataOnly struct{ Data }

func TestExtensions(t *testing.T) {
	if got, want := Extensions(dataOnly{}), "creation,creation-with-upload,termination,expiration,checksum"; got != want {
		t.Errorf("Extensions of a bare backend = %q; want %q", got, want)
	}
}
