//go:build !unix

package reflexupload

import (
	"errors"
	"os"
)

// canPark: without openat(2) (Windows, Plan 9, WebAssembly), a file stays
// open for the whole upload; nothing here is called.
const canPark = false

var errNoParking = errors.New("parking files is not supported on this system")

func openInFolder(*os.File, string) (int, error) { return -1, errNoParking }
func fdWrite(int, []byte) (int, error)           { return 0, errNoParking }
func fdClose(int) error                          { return errNoParking }
func fdSync(int) error                           { return errNoParking }
func interrupted(error) bool                     { return false }
