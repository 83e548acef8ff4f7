// Package mailpit runs a real mailpit SMTP server for tests and reads what it
// received through its HTTP API. Each test gets its own process on free
// loopback ports, with its database in the test's temp dir.
package mailpit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailauth/caddy-mailauth/test/daemon"
)

// Server is a running mailpit.
type Server struct {
	// SMTPHost and SMTPPort are where it accepts mail (plain text; any or
	// no AUTH accepted).
	SMTPHost string
	SMTPPort int
	// APIURL is the base of its HTTP API, without a trailing slash.
	APIURL string

	bin    string
	args   []string
	cmd    *exec.Cmd
	exited <-chan struct{} // closed once the process has been reaped
	output *daemon.Output
	client *http.Client
}

// Summary is one entry of the message list.
type Summary struct {
	ID        string
	MessageID string
	From      string
	To        []string
	Subject   string
	Created   time.Time
	// Username is the name the client authenticated with, or "".
	Username string
}

// Message is one received message in full.
type Message struct {
	ID        string
	MessageID string
	From      string
	To        []string
	Subject   string
	Text      string
	HTML      string
	// Username is the name the client authenticated with, or "".
	Username string
	// Headers holds every header as received, keyed in canonical MIME form
	// ("Message-Id", "Auto-Submitted").
	Headers map[string][]string
}

// Header returns the first value of the named header, or "".
func (m *Message) Header(name string) string {
	if v := m.Headers[textproto.CanonicalMIMEHeaderKey(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// startTimeout bounds how long mailpit may take to answer its API.
const startTimeout = 20 * time.Second

// Start launches mailpit and stops it when the test ends. The binary is
// MAILPIT_BIN, else mailpit on PATH, else $GOPATH/bin/mailpit. Extra
// mailpit flags, such as --smtp-tls-cert and --smtp-tls-key for STARTTLS,
// are appended to the defaults.
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	bin := findBinary(t)
	// Free ports are found by binding and releasing them, so another process
	// can take one before mailpit does; a second try then succeeds.
	var lastErr error
	for range 3 {
		s, err := start(t, bin, extraArgs)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("mailpit: %v", lastErr)
	return nil
}

func findBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("MAILPIT_BIN"); bin != "" {
		return bin
	}
	if bin, err := exec.LookPath("mailpit"); err == nil {
		return bin
	}
	bin := filepath.Join(goPath(), "bin", "mailpit")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("mailpit: binary not found in MAILPIT_BIN, PATH or %s; install it with: go install github.com/axllent/mailpit@v1.33.1", bin)
	}
	return bin
}

// goPath asks the go command first, because GOPATH may be set in go env
// rather than the environment.
func goPath() string {
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		// GOPATH may list several directories; go install uses the first.
		if first, _, _ := strings.Cut(strings.TrimSpace(string(out)), string(os.PathListSeparator)); first != "" {
			return first
		}
	}
	if p := os.Getenv("GOPATH"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, "go")
}

func start(t testing.TB, bin string, extraArgs []string) (*Server, error) {
	smtpPort, err := daemon.FreePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := daemon.FreePort()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	s := &Server{
		SMTPHost: "127.0.0.1",
		SMTPPort: smtpPort,
		APIURL:   "http://127.0.0.1:" + strconv.Itoa(httpPort),
		output:   &daemon.Output{},
		client:   &http.Client{Timeout: 5 * time.Second},
	}
	args := []string{
		"--smtp", net.JoinHostPort(s.SMTPHost, strconv.Itoa(smtpPort)),
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)),
		"--database", filepath.Join(dir, "mailpit.db"),
		"--smtp-auth-accept-any",
		"--smtp-disable-rdns",
		"--disable-version-check",
		// Off until SetChaos sets a trigger; lets tests provoke SMTP errors.
		"--enable-chaos",
	}
	if !slices.Contains(extraArgs, "--smtp-require-starttls") && !slices.Contains(extraArgs, "--smtp-require-tls") {
		// Lets clients authenticate over the plain connection most tests
		// use; mailpit refuses the flag when it requires TLS.
		args = append(args, "--smtp-auth-allow-insecure")
	}
	s.bin, s.args = bin, append(args, extraArgs...)
	if err := s.launch(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("mailpit output:\n%s", s.output.String())
		}
	})
	if err := s.waitReady(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w; output:\n%s", err, s.output.String())
	}
	return s, nil
}

// launch starts the process with the server's arguments.
func (s *Server) launch() error {
	s.cmd = exec.Command(s.bin, s.args...)
	var err error
	s.exited, err = daemon.Start(s.cmd, s.output)
	return err
}

// Restart starts a stopped mailpit again on the same ports and database,
// as a mail server coming back after an outage would. Messages received
// before the stop are kept.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.launch(); err != nil {
		t.Fatalf("mailpit: %v", err)
	}
	if err := s.waitReady(); err != nil {
		t.Fatalf("mailpit: restarting: %v; output:\n%s", err, s.output.String())
	}
}

// waitReady returns once both the API and the SMTP port answer.
func (s *Server) waitReady() error {
	return daemon.WaitReady(s.exited, startTimeout, 25*time.Millisecond, s.ready)
}

func (s *Server) ready() error {
	resp, err := s.client.Get(s.APIURL + "/api/v1/messages")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("API answered %s", resp.Status)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(s.SMTPHost, strconv.Itoa(s.SMTPPort)), time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// Stop kills mailpit at once and waits for it to exit, so that its SMTP port
// refuses connections when Stop returns. It may be called more than once.
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// apiAddress is an address as the API returns it.
type apiAddress struct {
	Name    string
	Address string
}

func addresses(list []apiAddress) []string {
	out := make([]string, 0, len(list))
	for _, a := range list {
		out = append(out, a.Address)
	}
	return out
}

// Messages lists every received message, newest first.
func (s *Server) Messages(t testing.TB) []Summary {
	t.Helper()
	list, err := s.messages()
	if err != nil {
		t.Fatalf("mailpit: listing messages: %v", err)
	}
	return list
}

func (s *Server) messages() ([]Summary, error) {
	var body struct {
		Messages []struct {
			ID        string
			MessageID string
			From      apiAddress
			To        []apiAddress
			Subject   string
			Created   time.Time
			Username  string
		} `json:"messages"`
	}
	if err := s.getJSON("/api/v1/messages?limit=1000", &body); err != nil {
		return nil, err
	}
	out := make([]Summary, 0, len(body.Messages))
	for _, m := range body.Messages {
		out = append(out, Summary{
			ID: m.ID, MessageID: m.MessageID, From: m.From.Address,
			To: addresses(m.To), Subject: m.Subject, Created: m.Created, Username: m.Username,
		})
	}
	return out, nil
}

// WaitForMessage polls until a message to the given address has arrived and
// returns it in full; it fails the test after timeout.
func (s *Server) WaitForMessage(t testing.TB, to string, timeout time.Duration) *Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		list, err := s.messages()
		if err != nil {
			t.Fatalf("mailpit: listing messages: %v", err)
		}
		for _, sum := range list {
			for _, rcpt := range sum.To {
				if strings.EqualFold(rcpt, to) {
					return s.message(t, sum.ID)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpit: no message to %s arrived within %s (%d other messages)", to, timeout, len(list))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (s *Server) message(t testing.TB, id string) *Message {
	t.Helper()
	var body struct {
		ID        string
		MessageID string
		From      apiAddress
		To        []apiAddress
		Subject   string
		Text      string
		HTML      string
		Username  string
	}
	if err := s.getJSON("/api/v1/message/"+id, &body); err != nil {
		t.Fatalf("mailpit: reading message %s: %v", id, err)
	}
	m := &Message{
		ID: body.ID, MessageID: body.MessageID, From: body.From.Address,
		To: addresses(body.To), Subject: body.Subject, Text: body.Text, HTML: body.HTML,
		Username: body.Username,
	}
	if err := s.getJSON("/api/v1/message/"+id+"/headers", &m.Headers); err != nil {
		t.Fatalf("mailpit: reading headers of message %s: %v", id, err)
	}
	return m
}

// DeleteAll removes every received message.
func (s *Server) DeleteAll(t testing.TB) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, s.APIURL+"/api/v1/messages", nil)
	if err != nil {
		t.Fatalf("mailpit: %v", err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("mailpit: deleting messages: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("mailpit: deleting messages: %s: %s", resp.Status, b)
	}
}

// ChaosTrigger makes mailpit answer one SMTP stage with ErrorCode (400-599)
// for Probability percent of commands (0 disables it).
type ChaosTrigger struct {
	ErrorCode   int
	Probability int
}

// Chaos sets the error triggers of the SMTP server, as mailpit's chaos API
// names them. A zero trigger disables that stage's errors.
type Chaos struct {
	Sender         ChaosTrigger
	Recipient      ChaosTrigger
	Authentication ChaosTrigger
}

// SetChaos replaces the SMTP error triggers; SetChaos(t, Chaos{}) turns
// them all off.
func (s *Server) SetChaos(t testing.TB, c Chaos) {
	t.Helper()
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("mailpit: %v", err)
	}
	req, err := http.NewRequest(http.MethodPut, s.APIURL+"/api/v1/chaos", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("mailpit: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("mailpit: setting chaos: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("mailpit: setting chaos: %s: %s", resp.Status, b)
	}
}

func (s *Server) getJSON(path string, v any) error {
	resp, err := s.client.Get(s.APIURL + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: decoding: %w", path, err)
	}
	return nil
}
