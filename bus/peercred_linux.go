// SPDX-License-Identifier: GPL-3.0-or-later

package bus

import (
	"net"
	"syscall"
)

// peerUID returns the uid of the process at the other end of conn
// (SO_PEERCRED); ok is true when the system told it.
func peerUID(conn *net.UnixConn) (uid int, ok bool, err error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return -1, false, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return -1, false, err
	}
	if credErr != nil {
		return -1, false, credErr
	}
	return int(cred.Uid), true, nil
}
