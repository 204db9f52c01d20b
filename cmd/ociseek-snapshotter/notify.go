package main

import (
	"fmt"
	"net"
	"os"
)

// notifySystemd sends state ("READY=1", "STOPPING=1") to the service
// manager, as sd_notify(3) does: one datagram to the unix socket named by
// $NOTIFY_SOCKET ("@name" is an abstract socket, which Go's net package
// understands as written). Without $NOTIFY_SOCKET (not started by systemd,
// or not Type=notify) it does nothing.
//
// This is the whole protocol the daemon needs, so it is written here rather
// than taken from go-systemd.
func notifySystemd(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd at %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify systemd at %s: %w", addr, err)
	}
	return nil
}
