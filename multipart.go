package reflexupload

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/reflexupload/caddy-reflex-upload/internal/formstream"
	"github.com/reflexupload/caddy-reflex-upload/internal/names"
	"github.com/reflexupload/caddy-reflex-upload/internal/store"
)

// Limits on the text fields of a standard upload.
const (
	maxFieldBytes = 1 << 20 // one text field, as Reflex bounds __reflex_event_args
	maxFields     = 1000    // text fields in one request
)

// reflexArgsField is the text field in which Reflex's frontend sends the
// arguments of the upload event handler.
const reflexArgsField = "__reflex_event_args"

// receivedFile is a file part held in a temp file until the request ends.
type receivedFile struct {
	storedFile
	sent string // the name the client sent
	tmp  string // temp file, relative to the root
}

// upload is one standard upload request in progress.
type upload struct {
	h      *Handler
	body   *bodyReader
	files  []*receivedFile
	fields map[string][]string
	nField int
	// fieldBytes counts the names and values of the fields kept.
	fieldBytes int64
	placed     store.Publisher // the files moved into place, until kept or undone
}

// serveUpload receives a multipart/form-data body, streaming each file part
// to a temp file, and on success moves them all into place. The upload is
// in the progress registry from start to end, and can be cancelled there.
// In forward mode the app then gets the upload's JSON and answers.
func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	id, err := uploadIDOf(r)
	if err != nil {
		return h.refuse(w, err)
	}
	u := &upload{
		h:      h,
		body:   &bodyReader{r: r.Body, limit: h.MaxRequestSize, declared: r.ContentLength},
		fields: map[string][]string{},
	}
	defer u.discard()
	ctx, entry, release, err := h.startUpload(w, r, id, kindMultipart, u.body)
	if err != nil {
		return h.refuse(w, err)
	}
	defer release()
	began := time.Now()

	err = u.run(r)
	if err != nil && errors.Is(context.Cause(ctx), errCancelled) {
		err = errUploadCancelled
	} else if err != nil && errors.Is(context.Cause(ctx), errShuttingDown) {
		err = errServerShutdown
	}
	if err != nil {
		u.discard() // before the progress says how it ended
		h.finish(r, entry, u.body, nil, err, began)
		return h.refuse(w, err)
	}
	res := uploadResult{UploadID: id, Files: u.stored(), Fields: u.fields}

	if h.Mode == modeForward {
		status, err := h.forward(w, r, next, res, u.placed)
		if err == nil && h.appRefused(status) {
			h.finish(r, entry, u.body, nil, errAppRefused.status(status), began)
			return nil
		}
		h.finish(r, entry, u.body, res.Files, err, began)
		return err
	}
	u.placed.Keep()
	h.finish(r, entry, u.body, res.Files, nil, began)

	if r.Header.Get("Reflex-Client-Token") != "" && r.Header.Get("Reflex-Event-Handler") != "" {
		// Reflex's upload.js reads each line of the answer as a state update.
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "{}\n")
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	return res.writeJSON(w)
}

// uploadIDOf gives the id the client chose for its upload (X-Progress-ID,
// as a header or a query parameter), or a new random one.
func uploadIDOf(r *http.Request) (string, error) {
	id := r.Header.Get("X-Progress-ID")
	if id == "" {
		id = r.URL.Query().Get("X-Progress-ID")
	}
	if id == "" {
		return newID(), nil
	}
	if !validID.MatchString(id) {
		return "", errInvalidUploadID
	}
	return id, nil
}

// run reads the whole request and stores its files.
func (u *upload) run(r *http.Request) error {
	h := u.h
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		return errInvalidRequest.with(err, "the body must be multipart/form-data with a boundary")
	}
	if h.MaxRequestSize > 0 && r.ContentLength > h.MaxRequestSize {
		return errRequestTooLarge
	}
	mr := formstream.NewReader(u.body, params["boundary"], 0)
	err = u.receive(mr)
	mr.Release() // its large buffer, if it stopped early
	if err != nil {
		return err
	}
	// Complete only at the body's end: one that stops before its length
	// after the close delimiter is incomplete (RFC 9112, section 6.3).
	if err := u.body.rest(); err != nil {
		return u.readError(err, "")
	}
	return u.commit()
}

// receive reads every part of the body.
func (u *upload) receive(mr *formstream.Reader) error {
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return u.readError(err, "")
		}
		if part.HasFileName() {
			if part.FormName() == reflexArgsField {
				return errInvalidRequest.with(nil, "%s must be a text field, not a file", reflexArgsField)
			}
			if part.FileName() == "" {
				continue // an empty file input of an HTML form: no file chosen
			}
			err = u.receiveFile(part)
		} else {
			err = u.receiveField(part)
		}
		if err != nil {
			return err
		}
	}
}

// readError explains an error met while reading the body.
func (u *upload) readError(err error, file string) error {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, errBodyTooLarge) || errors.As(err, &tooLarge):
		return errRequestTooLarge.withFile(file)
	case u.body.err != nil:
		return errInvalidRequest.with(err, "reading the request body failed: the client went away or sent too little").withFile(file)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errInvalidRequest.with(err, "the body ends before the closing multipart boundary").withFile(file)
	}
	return errInvalidRequest.with(err, "malformed multipart body: %v", err).withFile(file)
}

// receiveFile streams one file part into a temp file, enforcing the per-file
// limits and the accepted types before the bytes are kept.
func (u *upload) receiveFile(part *formstream.Part) error {
	h := u.h
	sent := names.FromDisposition(part.Header.Get("Content-Disposition"))
	if h.MaxFiles > 0 && len(u.files) >= h.MaxFiles {
		return errTooManyFiles.with(nil, "a request may hold at most %d files", h.MaxFiles).withFile(sent)
	}
	name, err := names.Sanitize(sent)
	if err != nil {
		return errInvalidFilename.with(err, "%v", err).withFile(sent)
	}
	if h.OnConflict == conflictReject && h.root.files.Exists(context.Background(), name) {
		return errFileExists.withFile(sent)
	}

	var f store.Temp
	err = waitDescriptor(func() (err error) {
		f, err = h.createTemp(name)
		return err
	})
	if err != nil {
		return storeError(err)
	}
	tmp := f.Name()
	rf := &receivedFile{sent: sent, tmp: tmp}
	rf.Field = part.FormName()
	rf.Path = name
	u.files = append(u.files, rf) // from here on, discard removes the temp file
	sink := newFileSink(f, h.newHash(), h.root.appendTo(tmp))
	closed := false
	defer func() {
		if !closed {
			_ = sink.close(false)
		}
	}()

	check := h.check.New(name, part.Header.Get("Content-Type"))
	for {
		chunk, err := part.Chunk()
		if err == io.EOF {
			break
		}
		if err != nil {
			return u.readError(err, sent)
		}
		if err := check.Write(chunk); err != nil {
			return checkError(err, sent)
		}
		if _, err := sink.Write(chunk); err != nil {
			return storeError(err)
		}
	}
	if err := check.End(); err != nil {
		return checkError(err, sent)
	}
	closed = true
	if err := sink.close(h.fsync); err != nil {
		return storeError(err)
	}
	rf.Size = check.Size()
	rf.ContentType = check.ContentType()
	rf.SHA256 = sink.sum()
	return nil
}

// createTemp makes the temp file of a file to be stored as name. Under
// overwrite and reject the name it is published at is name, so a store
// that can use it (S3: the object is completed in place, not copied from
// a staging object) is told.
func (h *Handler) createTemp(name string) (store.Temp, error) {
	if byName, ok := h.root.files.(store.TempsByName); ok && h.OnConflict != conflictRename {
		return byName.CreateTempAs(context.Background(), name)
	}
	return h.root.files.CreateTemp(context.Background())
}

// commit moves every received file into place, all or none: the names are
// checked against each other and against the disk before any file moves,
// and a failure while moving takes back what moved. The batch stays open
// (u.placed) until the request's outcome is known: keep or undo.
func (u *upload) commit() error {
	h := u.h
	names := make([]string, len(u.files))
	for i, f := range u.files {
		names[i] = f.Path
	}
	b := h.root.files.NewBatch(store.Policy(h.OnConflict), h.fsync)
	if i, err := b.Plan(names); err != nil {
		return conflictError(err, u.files[i].sent)
	}
	for i, f := range u.files {
		stored, err := b.Put(i, f.tmp)
		if err != nil {
			b.Undo()
			return conflictError(err, f.sent)
		}
		f.tmp = ""
		f.Path = stored
		f.Name = path.Base(stored)
		f.URL = h.fileURL(stored)
	}
	u.placed = b
	return nil
}

// discard removes the temp files that were not moved into place.
func (u *upload) discard() {
	for _, f := range u.files {
		if f.tmp != "" {
			u.h.root.files.RemoveTemp(f.tmp)
			f.tmp = ""
		}
	}
}

// stored lists the files of a successful upload.
func (u *upload) stored() []storedFile {
	out := make([]storedFile, len(u.files))
	for i, f := range u.files {
		out[i] = f.storedFile
	}
	return out
}
