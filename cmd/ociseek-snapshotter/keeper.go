package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/prometheus/client_golang/prometheus"
)

// buildVersion names the build in the log of a takeover; set at link time
// (go build -ldflags "-X main.buildVersion=..."), so an upgrade shows.
var buildVersion = "dev"

// holderSocketName is the fd holder's socket under the daemon's root.
const holderSocketName = "fd-holder.sock"

// holderClient is the daemon's side of the fd holder (holder.go): the
// fs.SessionKeeper the lazy file system hands its connections to.
type holderClient struct {
	mu sync.Mutex
	c  *net.UnixConn
}

var _ fs.SessionKeeper = (*holderClient)(nil)

// newKeptFileSystem is newFileSystem with the FUSE connections kept by the
// fd holder (started if none runs), and the connections it held for the
// previous daemon taken over before the snapshotter restores the rest.
// Without a holder (it cannot be started) the file system works as before:
// mounts just do not outlive the daemon.
func newKeptFileSystem(ctx context.Context, cfg *config.Config, regs registryAccess, reg prometheus.Registerer, userXattr bool) (*fs.FS, *holderClient, error) {
	k, err := connectHolder(ctx, filepath.Join(cfg.Daemon.Root, holderSocketName))
	if err != nil {
		log.G(ctx).WithError(err).Warn("no fd holder: lazy mounts will not survive a restart of the daemon")
		f, err := newFileSystem(cfg, regs, reg, userXattr)
		return f, nil, err
	}
	held, err := k.list()
	if err != nil {
		k.close()
		return nil, nil, fmt.Errorf("fd holder: %w", err)
	}
	f, err := newFileSystem(cfg, regs, reg, userXattr, fs.WithSessionKeeper(k))
	if err != nil {
		for _, h := range held {
			h.Dev.Close()
		}
		k.close()
		return nil, nil, err
	}
	if len(held) > 0 {
		start := time.Now()
		served := f.Adopt(ctx, held)
		log.G(ctx).WithField("build", buildVersion).
			Infof("took over %d of %d lazy mounts of the previous daemon in %v", len(served), len(held), time.Since(start))
	}
	return f, k, nil
}

// connectHolder connects to the holder at socket, starting one (this
// binary, "fd-holder") when none answers.
func connectHolder(ctx context.Context, socket string) (*holderClient, error) {
	if c, err := dialHolder(socket); err == nil {
		return &holderClient{c: c}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start fd holder: %w", err)
	}
	if strings.HasSuffix(exe, ".test") {
		// A daemon run inside a Go test binary: that binary has no
		// fd-holder verb (it would run the tests again).
		return nil, errors.New("start fd holder: not from a test binary")
	}
	cmd := exec.Command(exe, "fd-holder", socket)
	// Not the daemon's stderr: whoever reads that pipe (a supervisor, a
	// test waiting for the daemon's output to end) would wait for the
	// holder too. It logs little, to a file beside its socket.
	logf, err := os.OpenFile(strings.TrimSuffix(socket, ".sock")+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start fd holder: %w", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// A session of its own: signals to the daemon's process group (a
	// terminal's ^C, a supervisor's group kill) do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start fd holder: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reap it, should it end before the daemon
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dialHolder(socket)
		if err == nil {
			log.G(ctx).WithField("pid", cmd.Process.Pid).Info("fd holder started")
			return &holderClient{c: c}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("fd holder started but %s does not answer: %w", socket, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dialHolder(socket string) (*net.UnixConn, error) {
	return net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socket, Net: "unixpacket"})
}

// Keep hands the holder a copy of dev with state.
func (k *holderClient) Keep(mountpoint string, dev *os.File, state []byte) error {
	return k.call(holderMsg{Op: "keep", Mountpoint: mountpoint, State: state}, dev)
}

// Drop tells the holder to close its copy of mountpoint's connection.
func (k *holderClient) Drop(mountpoint string) error {
	return k.call(holderMsg{Op: "drop", Mountpoint: mountpoint}, nil)
}

func (k *holderClient) call(m holderMsg, dev *os.File) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := writeHolderMsg(k.c, m, dev); err != nil {
		return fmt.Errorf("fd holder: %w", err)
	}
	r, rdev, err := readHolderMsg(k.c)
	if rdev != nil {
		rdev.Close()
	}
	switch {
	case err != nil:
		return fmt.Errorf("fd holder: %s: %w", m.Op, err)
	case r.Op != "ok":
		return fmt.Errorf("fd holder: %s: %s", m.Op, r.Error)
	}
	return nil
}

// list takes the connections the holder keeps (it keeps them too, until
// told otherwise).
func (k *holderClient) list() ([]fs.HeldSession, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := writeHolderMsg(k.c, holderMsg{Op: "list"}, nil); err != nil {
		return nil, err
	}
	var held []fs.HeldSession
	for {
		m, dev, err := readHolderMsg(k.c)
		if err != nil {
			return nil, errors.Join(err, closeHeld(held))
		}
		switch m.Op {
		case "held":
			if dev == nil {
				continue
			}
			held = append(held, fs.HeldSession{Mountpoint: m.Mountpoint, Dev: dev, State: m.State})
		case "end":
			return held, nil
		default:
			return nil, errors.Join(fmt.Errorf("list: %s %s", m.Op, m.Error), closeHeld(held))
		}
	}
}

func closeHeld(held []fs.HeldSession) error {
	for _, h := range held {
		h.Dev.Close()
	}
	return nil
}

// close ends the connection to the holder; the holder keeps what it holds.
func (k *holderClient) close() error {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c.Close()
}
