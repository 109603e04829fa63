//go:build !linux

package enginetest

import "os/exec"

// dieWithParent does nothing where the kernel cannot tie a process's life
// to its parent's: the test's cleanup stops the engine.
func dieWithParent(*exec.Cmd) {}
