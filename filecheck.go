package reflexupload

import (
	"github.com/gabriel-vasile/mimetype"
)

// fileCheck applies the per-file limits to a file part as its bytes go by:
// the size against max_size and the first bytes against accept before the
// bytes are kept, and min_size at the end. Standard uploads and track mode
// share it.
type fileCheck struct {
	h        *Handler
	name     string // sanitised, for the type of its extension
	sent     string // as sent, for the error
	declared string // the part's Content-Type
	size     int64
	head     []byte
	sniffed  *mimetype.MIME
}

func (h *Handler) newFileCheck(name, sent, declared string) *fileCheck {
	return &fileCheck{h: h, name: name, sent: sent, declared: declared, head: make([]byte, 0, sniffLen)}
}

// add checks the next bytes of the file.
func (c *fileCheck) add(p []byte) error {
	if max := c.h.MaxSize; max > 0 && c.size+int64(len(p)) > max {
		return errFileTooLarge.with(nil, "file is larger than %d bytes", max).withFile(c.sent)
	}
	c.size += int64(len(p))
	if c.sniffed == nil {
		c.head = append(c.head, p[:min(len(p), sniffLen-len(c.head))]...)
		if len(c.head) == sniffLen {
			return c.sniff()
		}
	}
	return nil
}

// end checks what only the end tells: the type of a file shorter than the
// sniffing window, and min_size.
func (c *fileCheck) end() error {
	if c.sniffed == nil {
		if err := c.sniff(); err != nil {
			return err
		}
	}
	if c.size < c.h.MinSize {
		return errFileTooSmall.with(nil, "file is smaller than %d bytes", c.h.MinSize).withFile(c.sent)
	}
	return nil
}

// sniff tells the type from the head and checks it against accept.
func (c *fileCheck) sniff() error {
	c.sniffed = mimetype.Detect(c.head)
	c.head = nil // not needed any more; a slow upload should not keep it
	if err := c.h.accept.check(c.name, c.declared, c.sniffed); err != nil {
		return errInvalidType.with(err, "file type is not accepted: %v", err).withFile(c.sent)
	}
	return nil
}

// contentType is the sniffed type, once end has passed.
func (c *fileCheck) contentType() string { return c.sniffed.String() }
