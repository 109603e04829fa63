// Package tus is the tus 1.0.0 resumable-upload protocol
// (https://tus.io/protocols/resumable-upload) without HTTP plumbing or
// storage: the parsing of its headers, the durable state of an upload
// (Info), and the interfaces a backend implements to hold uploads (Data
// for their bytes, States for their Info), with optional capabilities from
// which the Tus-Extension header is derived.
package tus

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// Protocol constants.
const (
	Version     = "1.0.0"
	ContentType = "application/offset+octet-stream"
	// Checksums are the Upload-Checksum algorithms understood.
	Checksums = "sha1,sha256,md5"
	// MaxMetadata bounds the Upload-Metadata header: it is kept in the
	// upload's state, which is written again at every save.
	MaxMetadata = 64 << 10
)

// NewID returns a random 128-bit upload id in hex.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id has the form of the ids NewID makes.
func ValidID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// ParseMetadata parses Upload-Metadata: "key base64,key base64,key".
func ParseMetadata(raw string) (map[string]string, error) {
	md := map[string]string{}
	if strings.TrimSpace(raw) == "" {
		return md, nil
	}
	for pair := range strings.SplitSeq(raw, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(pair), " ")
		if key == "" || strings.ContainsAny(key, " \t") {
			return nil, errors.New("Upload-Metadata has an empty or malformed key")
		}
		if _, dup := md[key]; dup {
			return nil, errors.New("Upload-Metadata repeats the key " + strconv.Quote(key))
		}
		dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(val))
		if err != nil {
			return nil, errors.New("Upload-Metadata value of " + strconv.Quote(key) + " is not base64")
		}
		md[key] = string(dec)
	}
	return md, nil
}

// FileName picks the file name from metadata: Uppy's relativePath (when it
// holds a folder path), then filename, then Uppy's name.
func FileName(md map[string]string) string {
	for _, k := range []string{"relativePath", "filename", "name"} {
		if v := md[k]; v != "" && v != "null" {
			return v
		}
	}
	return ""
}

// FileType is the declared type from metadata: filetype, else Uppy's type.
func FileType(md map[string]string) string {
	if t := md["filetype"]; t != "" {
		return t
	}
	return md["type"]
}

// ParseSize parses a size header (Upload-Length, Upload-Offset): ASCII
// digits only, no sign, no spaces.
func ParseSize(v string) (int64, bool) {
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// A Checksum is a requested Upload-Checksum: the hash that a chunk's bytes
// are written to and the digest they must have.
type Checksum struct {
	hash.Hash
	want []byte
}

// OK reports whether the bytes written have the digest asked for.
func (c *Checksum) OK() bool {
	return string(c.Sum(nil)) == string(c.want)
}

// ParseChecksum parses Upload-Checksum: "<algorithm> <base64 digest>". An
// empty header gives nil.
func ParseChecksum(v string) (*Checksum, error) {
	if v == "" {
		return nil, nil
	}
	algo, enc, _ := strings.Cut(v, " ")
	var h hash.Hash
	switch algo {
	case "sha1":
		h = sha1.New()
	case "sha256":
		h = sha256.New()
	case "md5":
		h = md5.New()
	default:
		return nil, fmt.Errorf("Upload-Checksum algorithm %q is not one of %s", algo, Checksums)
	}
	want, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(want) != h.Size() {
		return nil, errors.New("Upload-Checksum digest is not valid base64 of the right length")
	}
	return &Checksum{Hash: h, want: want}, nil
}

// Concat is a parsed Upload-Concat header.
type Concat struct {
	Partial bool
	// Parts are the URLs of the partial uploads of a final upload.
	Parts []string
}

// Final reports whether the header asks for a final upload.
func (c Concat) Final() bool { return c.Parts != nil }

// ParseConcat parses Upload-Concat: "partial" or "final;<url> <url>…".
func ParseConcat(v string) (Concat, error) {
	switch {
	case v == "":
		return Concat{}, nil
	case v == "partial":
		return Concat{Partial: true}, nil
	case strings.HasPrefix(v, "final;"):
		parts := strings.Fields(strings.TrimPrefix(v, "final;"))
		if len(parts) == 0 {
			return Concat{}, errors.New("Upload-Concat: final needs the URLs of the partial uploads")
		}
		return Concat{Parts: parts}, nil
	}
	return Concat{}, errors.New("Upload-Concat must be partial or final;<urls>")
}
