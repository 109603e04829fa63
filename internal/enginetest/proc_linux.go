package enginetest

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill an engine when the test binary dies
// without its cleanup (a timeout panic, a kill), so none outlives it.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
