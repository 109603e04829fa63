package reflexupload

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"syscall"

	"github.com/reflexupload/caddy-reflex-upload/internal/store"
)

// uploadError is a failure the client is told about: a stable code
// (react-dropzone's where one fits), an HTTP status and a message. It is
// turned into a JSON response in one place, writeError.
type uploadError struct {
	Status int
	Code   string
	Detail string
	File   string // the file name the client sent, when the error is about one file
	err    error  // the cause, for errors.Is and logs; never shown
}

func (e *uploadError) Error() string { return e.Code + ": " + e.Detail }

func (e *uploadError) Unwrap() error { return e.err }

// The errors of the upload protocol. Use them through with/withFile so the
// sentinels stay untouched.
var (
	errInvalidRequest      = &uploadError{Status: http.StatusBadRequest, Code: "invalid-request", Detail: "malformed upload request"}
	errInvalidFilename     = &uploadError{Status: http.StatusBadRequest, Code: "invalid-filename", Detail: "file name is not allowed"}
	errFileExists          = &uploadError{Status: http.StatusConflict, Code: "file-exists", Detail: "a file with this name exists already"}
	errFileTooLarge        = &uploadError{Status: http.StatusRequestEntityTooLarge, Code: "file-too-large", Detail: "file is larger than the maximum size"}
	errRequestTooLarge     = &uploadError{Status: http.StatusRequestEntityTooLarge, Code: "request-too-large", Detail: "request body is larger than the maximum request size"}
	errFieldsTooLarge      = &uploadError{Status: http.StatusRequestEntityTooLarge, Code: "fields-too-large", Detail: "the text fields are larger than allowed in all"}
	errInvalidType         = &uploadError{Status: http.StatusUnsupportedMediaType, Code: "file-invalid-type", Detail: "file type is not accepted"}
	errFileTooSmall        = &uploadError{Status: http.StatusUnprocessableEntity, Code: "file-too-small", Detail: "file is smaller than the minimum size"}
	errTooManyFiles        = &uploadError{Status: http.StatusUnprocessableEntity, Code: "too-many-files", Detail: "request holds more files than allowed"}
	errAppRefused          = &uploadError{Status: http.StatusBadGateway, Code: "app-refused", Detail: "the app behind refused the upload"}
	errInsufficientStorage = &uploadError{Status: http.StatusInsufficientStorage, Code: "insufficient-storage", Detail: "not enough storage space for the upload"}
	errTusUnsupported      = &uploadError{Status: http.StatusNotImplemented, Code: "tus-unsupported", Detail: "resumable uploads are not supported by this site's storage"}
	errServerBusy          = &uploadError{Status: http.StatusServiceUnavailable, Code: "server-busy", Detail: "the server is handling too many uploads; try again later"}
)

// with returns a copy of e with a more precise detail and its cause.
func (e *uploadError) with(cause error, format string, args ...any) *uploadError {
	c := *e
	c.Detail = fmt.Sprintf(format, args...)
	c.err = cause
	return &c
}

// status returns a copy of e with another HTTP status.
func (e *uploadError) status(status int) *uploadError {
	c := *e
	c.Status = status
	return &c
}

// withFile returns a copy of e about the named file.
func (e *uploadError) withFile(name string) *uploadError {
	c := *e
	c.File = name
	return &c
}

// Is makes errors.Is(err, errFileTooLarge) true for every copy of the sentinel.
func (e *uploadError) Is(target error) bool {
	t, ok := target.(*uploadError)
	return ok && t.Code == e.Code
}

// errorBody is the JSON of a refused upload.
type errorBody struct {
	Detail string `json:"detail"`
	Code   string `json:"code"`
	File   string `json:"file,omitempty"`
}

// writeError writes a client error as JSON.
func writeError(w http.ResponseWriter, e *uploadError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Detail: e.Detail, Code: e.Code, File: e.File})
}

// isNoSpace reports whether err is a full disk or an exhausted quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// isOutOfDescriptors reports whether err is the process (EMFILE) or the
// system (ENFILE) out of file descriptors.
func isOutOfDescriptors(err error) bool { return store.OutOfDescriptors(err) }
