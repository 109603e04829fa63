package reflexupload

import (
	"context"
	"errors"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/reflexupload/caddy-reflex-upload/internal/bufpool"
	"github.com/reflexupload/caddy-reflex-upload/internal/filecheck"
	"github.com/reflexupload/caddy-reflex-upload/internal/store"
	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// The data path of resumable uploads: a PATCH's bytes appended to the
// upload's data with the checks, the hash and the checkpoints, and the
// bytes of partial uploads concatenated.

// tusCheckpoint is how many bytes a PATCH writes between two saves of the
// upload's state, so that a crash or a cut connection loses at most this
// much of a long PATCH.
const tusCheckpoint = 16 << 20

// tusAppend streams body onto the upload's data file from info.Offset,
// saving the state (after flushing the data, with fsync) every
// tusCheckpoint bytes and at the end, so that what info says is on disk.
// With a checksum, nothing is saved until the whole chunk is verified; a
// mismatch discards it. counter, which the body's reads move on, is set
// back to what is kept when a chunk is not.
func (h *Handler) tusAppend(info *tus.Info, body *bodyReader, checksum *tus.Checksum, counter *atomic.Int64) error {
	// Bytes past the saved offset were never confirmed (a crash, a
	// discarded chunk): Append drops them.
	f, err := h.root.data.Append(context.Background(), info.ID, info.Offset)
	if err != nil {
		return storeError(err)
	}
	var fileHash hash.Hash
	if h.Hash == hashSHA256 {
		if fileHash, err = tus.RestoreHash(info); err != nil {
			f.Close()
			return err
		}
	}
	sink := newFileSink(f, fileHash, h.root.appendTo(store.TusData(info.ID)))
	start, saved := info.Offset, *info

	check, err := h.tusCheck(info)
	if err != nil {
		_ = sink.close(false)
		return err
	}

	var src io.Reader = body
	if info.Length >= 0 {
		src = io.LimitReader(body, info.Length-info.Offset)
	} else if h.MaxSize > 0 {
		src = io.LimitReader(body, h.MaxSize-info.Offset+1)
	}
	// A small buffer while the client is slow, a pooled large one while
	// reads fill it (bufpool.Reader).
	in := bufpool.NewReader(src, bufpool.Large)
	defer in.Release()
	sinceSave, checkpointed := int64(0), false
	var readErr error
	for readErr == nil {
		var chunk []byte
		chunk, readErr = in.Next()
		if readErr == io.ErrUnexpectedEOF && body.err == nil {
			readErr = io.EOF // the body ended within this buffer
		}
		n := len(chunk)
		if n == 0 {
			continue
		}
		if err := check.Write(chunk); err != nil {
			_ = sink.close(false)
			return checkError(err, info.SentName)
		}
		info.TypeChecked, info.ContentType = check.Sniffed(), check.ContentType()
		if _, err := sink.Write(chunk); err != nil {
			_ = sink.close(false)
			return storeError(err)
		}
		if checksum != nil {
			checksum.Write(chunk)
		}
		info.Offset += int64(n)
		counter.Store(info.Offset)
		if sinceSave += int64(n); checksum == nil && sinceSave >= tusCheckpoint {
			if err := h.tusSave(sink, info, fileHash); err != nil {
				_ = sink.close(false)
				return err
			}
			sinceSave, checkpointed = 0, true
		}
	}
	if readErr == io.EOF && info.Length >= 0 && info.Offset == info.Length && bodyGoesOn(body) {
		// A body without Content-Length that is longer than the upload:
		// the whole chunk is refused, as a declared one would be.
		*info = saved
		counter.Store(start)
		_ = sink.close(false)
		if checkpointed {
			if err := h.states.Save(context.Background(), info); err != nil {
				return storeError(err)
			}
		}
		return errFileTooLarge.with(errPastLength, "the chunk goes past Upload-Length; it was discarded").withFile(info.SentName)
	}
	if readErr != io.EOF || (checksum != nil && !checksum.OK()) {
		// A cut body keeps what arrived, unless a checksum must vouch for it.
		err := errTusChecksum.withFile(info.SentName)
		if readErr != io.EOF {
			cause := body.err
			if cause == nil {
				cause = readErr
			}
			err = errTusInterrupted.with(cause, "reading the chunk failed (the client stopped sending or went away); what was received is kept")
			if _, ok := errors.AsType[*http.MaxBytesError](cause); ok {
				err = errRequestTooLarge.with(cause, "the chunk is larger than the server accepts in one request")
			}
		}
		if checksum != nil {
			*info = saved
			counter.Store(start)
			_ = sink.close(false)
			return err
		}
		if serr := h.tusSave(sink, info, fileHash); serr != nil {
			_ = sink.close(false)
			return serr
		}
		_ = sink.close(false)
		return err
	}
	if info.Length >= 0 && info.Offset == info.Length {
		// The whole file is here: one shorter than the sniffing window.
		if err := check.Sniff(); err != nil {
			_ = sink.close(false)
			return checkError(err, info.SentName)
		}
		info.TypeChecked, info.ContentType = check.Sniffed(), check.ContentType()
	}
	if err := h.tusSave(sink, info, fileHash); err != nil {
		_ = sink.close(false)
		return err
	}
	if err := sink.close(false); err != nil {
		return storeError(err)
	}
	return nil
}

// bodyGoesOn reports whether body holds another byte once the upload's
// length is reached.
func bodyGoesOn(body *bodyReader) bool {
	var one [1]byte
	for {
		n, err := body.Read(one[:])
		if n > 0 {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// tusSave makes the data durable (with fsync) and then saves the state.
func (h *Handler) tusSave(sink *fileSink, info *tus.Info, fileHash hash.Hash) error {
	if h.fsync {
		if err := sink.sync(); err != nil {
			return storeError(err)
		}
	}
	if err := tus.SaveHash(info, fileHash); err != nil {
		return err
	}
	info.Expires = h.root.now().Add(time.Duration(h.ChunkExpiry))
	return storeError(h.states.Save(context.Background(), info))
}

// tusCheck resumes the checks of an upload's file at its offset: its type
// (from the first bytes on disk, until it is known) and, while its length
// is deferred, max_size. A partial upload's type is checked as part of its
// final upload.
func (h *Handler) tusCheck(info *tus.Info) (*filecheck.Check, error) {
	rules := &h.check
	if info.Length >= 0 {
		// Upload-Length was checked against max_size already; the data
		// never goes past it.
		r := *rules
		r.MaxSize = 0
		rules = &r
	}
	if info.Partial {
		return rules.SizeOnly(info.Offset), nil
	}
	var head []byte
	if !info.TypeChecked {
		head = make([]byte, min(info.Offset, filecheck.SniffLen))
		n, err := h.root.data.ReadHead(context.Background(), info.ID, head)
		if err != nil {
			return nil, storeError(err)
		}
		head = head[:n]
	}
	check, err := rules.Resume(info.Name, info.Declared, info.Offset, head, info.ContentType)
	if err != nil {
		return nil, checkError(err, info.SentName)
	}
	info.TypeChecked, info.ContentType = check.Sniffed(), check.ContentType()
	return check, nil
}

// concatParts writes the partial uploads' data into f, hashing and checking
// the type on the way, and closes f.
func (h *Handler) concatParts(f store.Temp, info *tus.Info, parts []*tus.Info) error {
	reader, ok := h.root.data.(tus.Reader)
	if !ok {
		f.Close()
		return errInvalidRequest.with(nil, "this server's store cannot concatenate uploads")
	}
	sink := newFileSink(f, h.newHash(), nil)
	check := h.check.New(info.Name, info.Declared)
	bufp := bufpool.Get(bufpool.Large) // files on disk: no waiting
	defer bufpool.Put(bufp)
	for _, p := range parts {
		pf, err := reader.Open(context.Background(), p.ID)
		if err != nil {
			_ = sink.close(false)
			if errors.Is(err, fs.ErrNotExist) {
				return errInvalidRequest.with(err, "the data of partial upload %s is not found", p.ID)
			}
			return storeError(err)
		}
		for {
			n, rerr := pf.Read(*bufp)
			if n > 0 {
				if err := check.Write((*bufp)[:n]); err != nil {
					pf.Close()
					_ = sink.close(false)
					return checkError(err, info.SentName)
				}
				if _, err := sink.Write((*bufp)[:n]); err != nil {
					pf.Close()
					_ = sink.close(false)
					return storeError(err)
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				pf.Close()
				_ = sink.close(false)
				return storeError(rerr)
			}
		}
		pf.Close()
	}
	if err := check.End(); err != nil {
		_ = sink.close(false)
		return checkError(err, info.SentName)
	}
	info.TypeChecked, info.ContentType = true, check.ContentType()
	if err := sink.close(h.fsync); err != nil {
		return storeError(err)
	}
	info.Stored = &tus.File{Size: info.Length, ContentType: info.ContentType, SHA256: sink.sum()}
	return nil
}
