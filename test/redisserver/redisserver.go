// Package redisserver runs a real redis-server for tests. Each call to Start
// gets its own process on a free loopback port, with no persistence and its
// working directory in the test's temp dir.
//
// It needs Debian's redis-server package (make setup installs it).
package redisserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/daemon"
)

// Server is a running redis-server.
type Server struct {
	port int
	bin  string
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited <-chan struct{} // closed once the process has been reaped
	output *daemon.Output
}

// startTimeout bounds how long redis-server may take to answer PING.
const startTimeout = 20 * time.Second

// binary is the redis-server executable: REDIS_SERVER_BIN, else
// redis-server on PATH.
func binary(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("REDIS_SERVER_BIN"); bin != "" {
		return bin
	}
	if bin, err := exec.LookPath("redis-server"); err == nil {
		return bin
	}
	tb.Fatal("redisserver: redis-server not found in REDIS_SERVER_BIN or PATH; install it with make setup (Debian package redis-server)")
	return ""
}

// Start launches redis-server and stops it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb)
}

// StartReplicaOf launches a redis-server that replicates master
// (asynchronously, as Redis does), for Sentinel to promote.
func StartReplicaOf(tb testing.TB, master *Server) *Server {
	tb.Helper()
	return start(tb, "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
}

func start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	bin := binary(tb)
	s := &Server{bin: bin, output: &daemon.Output{}}
	dir := tb.TempDir()
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("redis-server output:\n%s", s.output.String())
		}
	})
	// Free ports are found by binding and releasing them, so another process
	// can take one before redis-server does; it then exits and a retry
	// succeeds.
	var lastErr error
	for range 3 {
		port, err := daemon.FreePort()
		if err != nil {
			tb.Fatalf("redisserver: %v", err)
		}
		s.port = port
		s.args = []string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
		}
		s.args = append(s.args, extra...)
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("redisserver: %v; output:\n%s", lastErr, s.output.String())
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL is the server's address as a redis:// URL for database 0.
func (s *Server) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// start runs redis-server in the foreground, so that its PID is ours to
// stop, and waits until it answers PING.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, s.args...)
	exited, err := daemon.Start(cmd, s.output)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	if err := daemon.WaitReady(exited, startTimeout, 10*time.Millisecond, s.ping); err != nil {
		s.Kill()
		return fmt.Errorf("PING: %w", err)
	}
	return nil
}

// ping sends PING in the inline protocol and expects +PONG.
func (s *Server) ping() error {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		// -LOADING and the like while the server starts.
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop ends redis-server with SIGTERM and waits for it to exit, so that its
// port refuses connections when Stop returns. It may be called more than
// once.
func (s *Server) Stop() {
	s.signal(syscall.SIGTERM)
}

// Kill ends redis-server with SIGKILL, as a crash would, and waits for it to
// exit. It may be called more than once.
func (s *Server) Kill() {
	s.signal(syscall.SIGKILL)
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	daemon.Stop(cmd, exited, sig, 5*time.Second)
}

// Restart stops redis-server and starts it again on the same port, as an
// operator's restart would: clients' connections break, and since nothing
// is persisted, the data is gone.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	var err error
	// The old process has released its port, but allow for a slow kernel.
	for range 3 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("redisserver: restarting: %v; output:\n%s", err, s.output.String())
}
