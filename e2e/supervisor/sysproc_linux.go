package supervisor

import "syscall"

// sysProcAttr has the kernel kill the child should this process die
// without stopping it (a test binary's timeout panic, a killed benchmark).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
