package redisserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/mailauth/caddy-mailauth/test/daemon"
)

// Sentinel is a running redis-sentinel (Debian's redis-sentinel package)
// watching one master.
type Sentinel struct {
	Server
}

// Failover timing of StartSentinel: a master that has not answered for
// DownAfter is down once a quorum of sentinels agree, and a replica is
// promoted within seconds. Production uses far longer; tests want the
// failover inside a few seconds.
const (
	DownAfterMillis       = 1000
	FailoverTimeoutMillis = 5000
)

// StartSentinel launches redis-sentinel monitoring master under name with
// the given quorum, and stops it when the test ends.
func StartSentinel(tb testing.TB, name string, master *Server, quorum int) *Sentinel {
	tb.Helper()
	bin := os.Getenv("REDIS_SENTINEL_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-sentinel"); err != nil {
			tb.Fatal("redisserver: redis-sentinel not found in REDIS_SENTINEL_BIN or PATH; install it with make setup (Debian package redis-sentinel)")
		}
	}
	s := &Sentinel{Server{bin: bin, output: &daemon.Output{}}}
	dir := tb.TempDir()
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("redis-sentinel output:\n%s", s.output.String())
		}
	})
	var lastErr error
	for range 3 {
		port, err := daemon.FreePort()
		if err != nil {
			tb.Fatalf("redisserver: %v", err)
		}
		s.port = port
		// Sentinel rewrites its config file as it learns the topology, so
		// each one needs its own, writable.
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor %s 127.0.0.1 %d %d
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 1
`, port, dir, name, master.port, quorum, name, DownAfterMillis, name, FailoverTimeoutMillis, name)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			tb.Fatal(err)
		}
		s.args = []string{conf}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("redisserver: sentinel: %v; output:\n%s", lastErr, s.output.String())
	return nil
}

// Addr is the sentinel's host:port.
func (s *Sentinel) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}
