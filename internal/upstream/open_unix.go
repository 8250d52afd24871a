//go:build unix && !aix

package upstream

import (
	"errors"
	"net"
	"syscall"
)

// open reports whether an idle connection is still open: the peer has neither
// closed it nor sent a byte nobody asked for (either makes it unfit to carry a
// request). It peeks without blocking, so it costs one system call.
func open(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && alive
}
