package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// The fd holder ("ociseek-snapshotter fd-holder SOCKET") keeps the FUSE
// connections of lazy mounts alive while no daemon serves them. The daemon
// starts it (keeper.go) in a session of its own, so that neither a signal
// to the daemon's process group nor the daemon's death ends it, and hands
// it an fd of every connection it mounts, with the state a later daemon
// needs to serve it again (fs.FS.Adopt). The next daemon asks for them
// back. The holder is small and changes rarely: an upgrade replaces the
// daemon, and the new daemon talks to the holder the old one started, so
// the protocol below is versioned and only ever grows.
//
// Protocol: SOCK_SEQPACKET, one JSON holderMsg per packet; a packet that
// carries a connection has its fd attached (SCM_RIGHTS).
//   keep  {mountpoint, state} + fd  -> {op: "ok"} (replaces a kept one)
//   drop  {mountpoint}              -> {op: "ok"}
//   list                            -> {op: "held", mountpoint, state} + fd, ..., {op: "end"}

// holderProtocol is the protocol version; a peer sends it in every message.
const holderProtocol = 1

// holderIdle is how long a holder with nothing to hold and no daemon
// connected waits before it exits.
const holderIdle = 5 * time.Second

// holderMsg is one message of the protocol.
type holderMsg struct {
	V          int             `json:"v"`
	Op         string          `json:"op"`
	Mountpoint string          `json:"mountpoint,omitempty"`
	State      json.RawMessage `json:"state,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// heldConn is one connection the holder keeps.
type heldConn struct {
	dev   *os.File
	state json.RawMessage
}

// holder is the state of the fd-holder process.
type holder struct {
	mu      sync.Mutex
	held    map[string]heldConn
	clients int
	idle    time.Time // when the holder last became empty and unconnected
}

// holderVerb is the fd-holder verb. SIGTERM, SIGINT and SIGHUP are
// ignored: a stop of the daemon's unit or terminal must not end it; only
// SIGKILL does (and the mounts with it, unless a daemon serves them).
func holderVerb(ctx context.Context, socketPath string) error {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	return runHolder(ctx, socketPath)
}

// runHolder serves socketPath until the holder holds nothing and no
// daemon has been connected for holderIdle.
func runHolder(ctx context.Context, socketPath string) error {
	_ = os.Remove(socketPath)
	lis, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: socketPath, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("fd holder: %w", err)
	}
	defer lis.Close()
	if err := os.Chmod(socketPath, 0o600); err != nil {
		return fmt.Errorf("fd holder: %w", err)
	}
	h := &holder{held: map[string]heldConn{}, idle: time.Now()}
	go h.reap(ctx)
	for {
		_ = lis.SetDeadline(time.Now().Add(time.Second))
		c, err := lis.AcceptUnix()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				if h.done() {
					return nil
				}
				continue
			}
			return fmt.Errorf("fd holder: %w", err)
		}
		h.mu.Lock()
		h.clients++
		h.mu.Unlock()
		go h.serve(ctx, c)
	}
}

// done reports whether the holder has nothing left to do.
func (h *holder) done() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held) == 0 && h.clients == 0 && time.Since(h.idle) > holderIdle
}

// reap drops connections that ended (unmounted, or aborted): the kernel
// reports POLLERR on their fds.
func (h *holder) reap(ctx context.Context) {
	for range time.Tick(time.Second) {
		h.mu.Lock()
		for mp, c := range h.held {
			p := []unix.PollFd{{Fd: int32(c.dev.Fd())}}
			if n, err := unix.Poll(p, 0); err == nil && n > 0 && p[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				log.G(ctx).WithField("mountpoint", mp).Info("fd holder: connection ended; dropped")
				c.dev.Close()
				delete(h.held, mp)
				h.touch()
			}
		}
		h.mu.Unlock()
	}
}

// touch records when the holder became idle; h.mu held.
func (h *holder) touch() {
	if len(h.held) == 0 && h.clients == 0 {
		h.idle = time.Now()
	}
}

func (h *holder) serve(ctx context.Context, c *net.UnixConn) {
	defer func() {
		c.Close()
		h.mu.Lock()
		h.clients--
		h.touch()
		h.mu.Unlock()
	}()
	for {
		m, dev, err := readHolderMsg(c)
		if err != nil {
			return // the daemon went away
		}
		if err := h.handle(c, m, dev); err != nil {
			log.G(ctx).WithError(err).Warn("fd holder: request failed")
			_ = writeHolderMsg(c, holderMsg{Op: "error", Error: err.Error()}, nil)
		}
	}
}

func (h *holder) handle(c *net.UnixConn, m holderMsg, dev *os.File) error {
	switch m.Op {
	case "keep":
		if dev == nil {
			return errors.New("keep without an fd")
		}
		h.mu.Lock()
		if old, ok := h.held[m.Mountpoint]; ok {
			old.dev.Close()
		}
		h.held[m.Mountpoint] = heldConn{dev: dev, state: m.State}
		h.mu.Unlock()
	case "drop":
		h.mu.Lock()
		if old, ok := h.held[m.Mountpoint]; ok {
			old.dev.Close()
			delete(h.held, m.Mountpoint)
		}
		h.mu.Unlock()
	case "list":
		h.mu.Lock()
		list := make(map[string]heldConn, len(h.held))
		for mp, hc := range h.held {
			list[mp] = hc
		}
		h.mu.Unlock()
		for mp, hc := range list {
			if err := writeHolderMsg(c, holderMsg{Op: "held", Mountpoint: mp, State: hc.state}, hc.dev); err != nil {
				return err
			}
		}
		return writeHolderMsg(c, holderMsg{Op: "end"}, nil)
	default:
		if dev != nil {
			dev.Close()
		}
		return fmt.Errorf("unknown request %q (protocol %d; this holder speaks %d)", m.Op, m.V, holderProtocol)
	}
	return writeHolderMsg(c, holderMsg{Op: "ok"}, nil)
}

// writeHolderMsg sends m, with dev attached when not nil.
func writeHolderMsg(c *net.UnixConn, m holderMsg, dev *os.File) error {
	m.V = holderProtocol
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if dev != nil {
		oob = unix.UnixRights(int(dev.Fd()))
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send %s: %w", m.Op, err)
	}
	return nil
}

// readHolderMsg receives one message and the fd attached to it, if any.
func readHolderMsg(c *net.UnixConn) (holderMsg, *os.File, error) {
	buf, oob := make([]byte, 1<<16), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return holderMsg{}, nil, err
	}
	if n == 0 {
		return holderMsg{}, nil, errors.New("peer closed the connection")
	}
	var dev *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return holderMsg{}, nil, fmt.Errorf("control message: %w", err)
		}
		for _, cm := range msgs {
			fds, err := unix.ParseUnixRights(&cm)
			if err != nil {
				continue
			}
			for i, fd := range fds {
				unix.CloseOnExec(fd)
				if i == 0 && dev == nil {
					dev = os.NewFile(uintptr(fd), "/dev/fuse")
				} else {
					unix.Close(fd)
				}
			}
		}
	}
	var m holderMsg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		if dev != nil {
			dev.Close()
		}
		return holderMsg{}, nil, fmt.Errorf("decode message: %w", err)
	}
	return m, dev, nil
}
