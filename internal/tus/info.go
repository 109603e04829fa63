package tus

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"fmt"
	"hash"
	"time"
)

// Info is the durable state of one resumable upload. A backend saves it
// only after the data it counts is durable, so its Offset never counts a
// byte that a crash could lose. Its JSON is what the local backend keeps on
// disk: fields are only ever added.
type Info struct {
	ID          string            `json:"id"`
	OwnerHash   string            `json:"owner_hash,omitempty"`   // OwnerHash of the owner value
	Length      int64             `json:"length"`                 // -1 while deferred
	Offset      int64             `json:"offset"`                 // bytes durably received
	MetadataRaw string            `json:"metadata_raw,omitempty"` // Upload-Metadata as sent, kept once
	Metadata    map[string]string `json:"-"`                      // MetadataRaw decoded
	Name        string            `json:"name,omitempty"`         // sanitised target path
	SentName    string            `json:"sent_name,omitempty"`
	Declared    string            `json:"declared,omitempty"` // the declared type (filetype)
	Partial     bool              `json:"partial,omitempty"`
	Final       bool              `json:"final,omitempty"`
	Parts       []string          `json:"parts,omitempty"` // the part URLs of a final upload
	Created     time.Time         `json:"created"`
	Expires     time.Time         `json:"expires"`
	HashState   []byte            `json:"hash_state,omitempty"` // sha256 state at Offset
	ContentType string            `json:"content_type,omitempty"`
	TypeChecked bool              `json:"type_checked,omitempty"`
	Done        bool              `json:"done,omitempty"`
	Stored      *File             `json:"stored,omitempty"`
}

// File describes a stored file, as an upload's answer reports it.
type File struct {
	Field       string `json:"field,omitempty"`
	Name        string `json:"name"`
	Path        string `json:"path"`
	URL         string `json:"url"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
	SHA256      string `json:"sha256,omitempty"`
}

// Complete reports whether every byte of the upload has arrived.
func (i *Info) Complete() bool { return i.Length >= 0 && i.Offset == i.Length }

// Expired reports whether an unfinished upload is past its expiry at now.
func (i *Info) Expired(now time.Time) bool { return !i.Done && now.After(i.Expires) }

// OwnerHash is what is kept of an owner value: its sha256 in hex, "" for
// none.
func OwnerHash(owner string) string {
	if owner == "" {
		return ""
	}
	s := sha256.Sum256([]byte(owner))
	return hex.EncodeToString(s[:])
}

// RestoreHash gives the sha256 state of the bytes before info.Offset, so
// that the whole file's sha256 is computed across requests and restarts.
func RestoreHash(info *Info) (hash.Hash, error) {
	h := sha256.New()
	if len(info.HashState) > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(info.HashState); err != nil {
			return nil, fmt.Errorf("restoring hash state: %w", err)
		}
	}
	return h, nil
}

// SaveHash keeps a hash's state in info (nil: none).
func SaveHash(info *Info, h hash.Hash) error {
	if h == nil {
		info.HashState = nil
		return nil
	}
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	info.HashState = b
	return err
}
