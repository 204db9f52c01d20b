package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// stopGrace bounds how long a process may take to exit after SIGTERM before
// it is killed.
const stopGrace = 10 * time.Second

// Process is one child process started by the harness. It is stopped by its
// PID (never by name), and its output goes to a log file kept for failure
// reports.
type Process struct {
	// Name names the process in messages ("containerd", "daemon").
	Name string
	// Log is the file holding the process's stdout and stderr.
	Log string

	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has been waited for
	err  error         // Wait's result, valid after done is closed
}

// StartProcess starts bin with args, with stdout and stderr appended to
// logPath. The environment is the harness's, plus env.
func StartProcess(name, logPath, bin string, args, env []string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A process group of its own, so a terminal's ^C reaches the harness
	// first and the harness decides how its children stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process (by PID) and, for SIGKILL, waits until it
// has been reaped.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.PID(), err)
	}
	if sig == syscall.SIGKILL {
		<-p.done
	}
	return nil
}

// Stop sends sig (SIGTERM when zero) and waits for the process to exit,
// killing it after a grace period. Stopping an exited process does nothing.
func (p *Process) Stop(sig syscall.Signal) error {
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if err := p.Signal(sig); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	return fmt.Errorf("%s (pid %d) ignored %v for %v and was killed", p.Name, p.PID(), sig, stopGrace)
}

// Tail returns the last n bytes of the process log, for failure messages.
func (p *Process) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// waitFor polls cond every 20 ms until it returns nil, p exits, or timeout
// passes; it returns the last error with the log tail.
func waitFor(p *Process, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited during start (%v); log %s:\n%s", p.Name, p.err, p.Log, p.Tail(4000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w; log %s:\n%s", p.Name, timeout, err, p.Log, p.Tail(4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mkdirs creates each directory (and parents) with mode 0700.
func mkdirs(dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// abs returns filepath.Abs(p) or p.
func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
