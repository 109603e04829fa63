//go:build unix

package reflexupload

import (
	"os"

	"golang.org/x/sys/unix"
)

// canPark: a parked file is opened again with openat(2) in its folder and
// written through the bare descriptor.
const canPark = true

func openInFolder(dir *os.File, name string) (int, error) {
	return unix.Openat(int(dir.Fd()), name, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
}

func fdWrite(fd int, p []byte) (int, error) { return unix.Write(fd, p) }
func fdClose(fd int) error                  { return unix.Close(fd) }
func fdSync(fd int) error                   { return unix.Fsync(fd) }
func interrupted(err error) bool            { return err == unix.EINTR }
