// Package daemon runs the servers that tests need (mailpit, slapd,
// redis-server) as child processes of the test binary: on free loopback
// ports, with their output kept for failure reports, and waited on until
// they answer. Each launcher package says what "answers" means for it.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Output collects a process's output, which the exec package writes from
// its own goroutines while a test may read it.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// handedOut holds every port FreePort has returned in this process. The
// kernel may give the same ephemeral port to two binds in a row once the
// first is closed, and Caddy listens with SO_REUSEPORT, so a site and its
// admin endpoint given the same number would both bind it and split the
// connections between them: a failure that shows up far from its cause.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a loopback TCP port that nothing listens on now and
// that no earlier call in this process returned.
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, errors.New("finding a free port: the kernel kept offering ports already handed out")
}

// Start runs cmd with its output going to out and returns a channel that
// closes when the process exits. If the test binary dies without cleaning
// up, the kernel kills the process, so no server outlives its test.
func Start(cmd *exec.Cmd, out *Output) (exited <-chan struct{}, err error) {
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return done, nil
}

// WaitReady calls ready every interval until it returns nil, and fails if
// the process exits first or timeout passes, with ready's last error.
func WaitReady(exited <-chan struct{}, timeout, interval time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited during startup")
		default:
		}
		if last = ready(); last == nil {
			return nil
		}
		time.Sleep(interval)
	}
	return fmt.Errorf("not ready within %s: %v", timeout, last)
}

// Stop sends sig to a started process and waits for it to exit; after
// grace it kills it. A process that has exited already is left alone.
func Stop(cmd *exec.Cmd, exited <-chan struct{}, sig os.Signal, grace time.Duration) {
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-exited
	}
}
