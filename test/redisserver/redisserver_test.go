package redisserver

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// command sends one inline command and returns the first line of the reply.
func command(t *testing.T, s *Server, cmd string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dialing %s: %v", s.Addr(), err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		t.Fatalf("sending %s: %v", cmd, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the reply to %s: %v", cmd, err)
	}
	return strings.TrimSpace(line)
}

func expectRefused(t *testing.T, s *Server, after string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after %s", s.Addr(), after)
	}
}

func TestStartedServerAnswersOnLoopbackAndStopClosesThePort(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Errorf("Addr = %q; want a loopback address", s.Addr())
	}
	if want := "redis://" + s.Addr() + "/0"; s.URL() != want {
		t.Errorf("URL = %q; want %q", s.URL(), want)
	}
	if got := command(t, s, "PING"); got != "+PONG" {
		t.Fatalf("PING answered %q; want +PONG", got)
	}
	if got := command(t, s, "CONFIG GET save"); got != "*2" {
		t.Fatalf("CONFIG GET save answered %q; want a two-element array", got)
	}
	s.Stop()
	expectRefused(t, s, "Stop")
	s.Stop() // a second Stop, as the test cleanup does, must not block or panic
}

func TestRestartServesTheSamePortWithoutTheOldData(t *testing.T) {
	s := Start(t)
	if got := command(t, s, "SET k v"); got != "+OK" {
		t.Fatalf("SET answered %q; want +OK", got)
	}
	addr := s.Addr()
	s.Restart(t)
	if s.Addr() != addr {
		t.Errorf("after Restart, Addr = %q; want the same %q", s.Addr(), addr)
	}
	if got := command(t, s, "EXISTS k"); got != ":0" {
		t.Errorf("EXISTS k after Restart answered %q; want :0 (nothing is persisted)", got)
	}
}

func TestKillEndsTheServerAtOnce(t *testing.T) {
	s := Start(t)
	s.Kill()
	expectRefused(t, s, "Kill")
	s.Restart(t)
	if got := command(t, s, "PING"); got != "+PONG" {
		t.Fatalf("PING after Kill and Restart answered %q; want +PONG", got)
	}
}
