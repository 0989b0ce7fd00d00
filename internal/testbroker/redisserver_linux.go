package testbroker

import "syscall"

// redisSysProcAttr returns the attributes of a redis-server process: it gets SIGKILL if
// the test binary dies before stopping it, so that none is left behind. Go never ends the
// thread that started it (the signal is tied to the thread), as the starting goroutine is
// not locked to its thread.
func redisSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
