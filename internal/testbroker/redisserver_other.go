//go:build !linux

package testbroker

import "syscall"

// redisSysProcAttr returns the attributes of a redis-server process: none beyond the
// defaults, as only Linux can kill a child when its parent dies.
func redisSysProcAttr() *syscall.SysProcAttr {
	return nil
}
