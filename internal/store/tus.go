package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/reflexupload/caddy-reflex-upload/internal/tus"
)

// tusDir holds the resumable uploads: {id} is the data received so far and
// {id}.json its state, both private.
var tusDir = path.Join(Private, "tus")

// TusData is the name of upload id's data, relative to the root: what
// Batch.Put publishes once the upload is complete.
func TusData(id string) string { return path.Join(tusDir, id) }

func tusInfo(id string) string { return path.Join(tusDir, id+".json") }

// TusFile is the name Batch.Put publishes the complete upload id from: its
// data.
func (l *Local) TusFile(id string) string { return TusData(id) }

// Create implements tus.Data.
func (l *Local) Create(_ context.Context, id string) error {
	f, err := l.root.OpenFile(TusData(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// Append implements tus.Data. The Appender is an *os.File.
func (l *Local) Append(_ context.Context, id string, offset int64) (tus.Appender, error) {
	f, err := l.root.OpenFile(TusData(id), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(offset); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ReadHead implements tus.Data.
func (l *Local) ReadHead(_ context.Context, id string, p []byte) (int, error) {
	f, err := l.root.Open(TusData(id))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.ReadFull(f, p)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return n, err
}

// Open implements tus.Reader: concatenation.
func (l *Local) Open(_ context.Context, id string) (io.ReadCloser, error) {
	return l.root.Open(TusData(id))
}

// Remove implements tus.Data.
func (l *Local) Remove(_ context.Context, id string) error {
	if err := l.root.Remove(TusData(id)); err != nil && !isMissing(err) {
		return err
	}
	return nil
}

// DeclareLength implements tus.LengthDeferrer: a local file needs no
// length.
func (l *Local) DeclareLength(context.Context, string, int64) error { return nil }

// TusStates gives the tus.States of the uploads in l: crash-safe files
// beside the data, written atomically (temp, fsync when asked, rename).
func (l *Local) TusStates(fsync bool) tus.States { return localStates{l: l, fsync: fsync} }

type localStates struct {
	l     *Local
	fsync bool
}

// Load implements tus.States.
func (s localStates) Load(_ context.Context, id string) (*tus.Info, error) {
	b, err := s.l.root.ReadFile(tusInfo(id))
	if err != nil {
		return nil, err
	}
	var info tus.Info
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("upload state %s: %w", id, err)
	}
	if info.Metadata, err = tus.ParseMetadata(info.MetadataRaw); err != nil {
		return nil, fmt.Errorf("upload state %s: %w", id, err)
	}
	return &info, nil
}

// Save implements tus.States.
func (s localStates) Save(_ context.Context, info *tus.Info) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	r := s.l.root
	tmp := tusInfo(info.ID) + ".tmp"
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && s.fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Rename(tmp, tusInfo(info.ID))
	}
	if err == nil && s.fsync {
		err = s.l.syncDir(tusDir)
	}
	if err != nil {
		_ = r.Remove(tmp)
	}
	return err
}

// Delete implements tus.States.
func (s localStates) Delete(_ context.Context, id string) error {
	if err := s.l.root.Remove(tusInfo(id)); err != nil && !isMissing(err) {
		return err
	}
	return nil
}

// List implements tus.States: every upload with a state file.
func (s localStates) List(context.Context) ([]string, error) {
	entries, err := fs.ReadDir(s.l.root.FS(), tusDir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && tus.ValidID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

var (
	_ tus.Data           = (*Local)(nil)
	_ tus.Reader         = (*Local)(nil)
	_ tus.LengthDeferrer = (*Local)(nil)
	_ tus.States         = localStates{}
)
