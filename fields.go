package reflexupload

import (
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/reflexupload/caddy-reflex-upload/internal/formstream"
)

// receiveField keeps a text field, within the bounds of one field
// (maxFieldBytes) and of all the fields of the request (max_fields_size).
// The value is held once, as the string that the answer and the app get.
func (u *upload) receiveField(part *formstream.Part) error {
	name := part.FormName()
	if u.nField++; u.nField > maxFields {
		return errInvalidRequest.with(nil, "more than %d form fields", maxFields)
	}
	room := u.h.MaxFieldsSize - u.fieldBytes - int64(len(name))
	tooLarge := errFieldsTooLarge.with(nil, "the text fields are larger than %d bytes in all", u.h.MaxFieldsSize)
	if room < 0 {
		return tooLarge // the name alone: many empty fields with long names
	}
	value := new(strings.Builder)
	for {
		chunk, err := part.Chunk()
		if err == io.EOF {
			break
		}
		if err != nil {
			return u.readError(err, "")
		}
		n := value.Len() + len(chunk)
		if n > maxFieldBytes {
			return errRequestTooLarge.with(nil, "form field %q is larger than 1 MiB", name)
		}
		if int64(n) > room {
			return tooLarge
		}
		if value.Cap()-value.Len() < len(chunk) {
			// Exactly the room needed, not the doubling of append: a value
			// is most often one run of the reader's buffer, at most a few.
			grown := new(strings.Builder)
			grown.Grow(n)
			grown.WriteString(value.String())
			value = grown
		}
		value.Write(chunk)
	}
	v := value.String()
	if name == reflexArgsField && v != "" && !isJSONObject(v) {
		// Empty means no arguments, as Reflex reads it.
		return errInvalidRequest.with(nil, "%s must be a JSON object", reflexArgsField)
	}
	u.fieldBytes += int64(len(name) + len(v))
	u.fields[name] = append(u.fields[name], v)
	return nil
}

// isJSONObject reports whether s is one valid JSON object.
func isJSONObject(s string) bool {
	t := strings.TrimLeft(s, " \t\r\n")
	return t != "" && t[0] == '{' && json.Valid([]byte(s))
}

// writeJSON writes the result as JSON (json.Encoder's output), one value
// at a time, so that the text fields are never copied into a whole document.
func (res *uploadResult) writeJSON(w io.Writer) error {
	head, err := json.Marshal(struct {
		UploadID string       `json:"upload_id"`
		Files    []storedFile `json:"files"`
	}{res.UploadID, res.Files})
	if err != nil {
		return err
	}
	head[len(head)-1] = ',' // in place of the closing brace: the fields follow
	write := func(b []byte) {
		if err == nil {
			_, err = w.Write(b)
		}
	}
	writeString := func(s string) {
		b, merr := json.Marshal(s)
		if err == nil {
			err = merr
		}
		write(b)
	}
	write(append(head, `"fields":{`...))
	for i, name := range slices.Sorted(maps.Keys(res.Fields)) {
		if i > 0 {
			write([]byte{','})
		}
		writeString(name)
		write([]byte{':', '['})
		for j, v := range res.Fields[name] {
			if j > 0 {
				write([]byte{','})
			}
			writeString(v)
		}
		write([]byte{']'})
	}
	write([]byte("}}\n"))
	return err
}
