// clockprobe tells whether this process may set clocks, without setting one: it asks to set
// CLOCK_MONOTONIC, which the kernel always refuses with EINVAL. A seccomp filter answers
// before the kernel does, so EPERM means the clock syscalls are blocked here, EINVAL means
// they reach the kernel (and with CAP_SYS_TIME, clock_settime(CLOCK_REALTIME) would succeed).
package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

func main() {
	ts := syscall.Timespec{}
	const clockMonotonic = 1
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_SETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	switch errno {
	case syscall.EPERM:
		fmt.Println("blocked: clock_settime -> EPERM")
	case syscall.EINVAL:
		fmt.Println("open: clock_settime reaches the kernel (EINVAL for CLOCK_MONOTONIC)")
		os.Exit(1)
	default:
		fmt.Printf("unexpected: clock_settime -> %v\n", errno)
		os.Exit(2)
	}
}
