// Package slapd runs a real OpenLDAP slapd for tests. Each call to Start gets
// its own process on free loopback ports (ldap:// and ldaps://), its own mdb
// database and TLS certificates in the test's temp dir, and the fixture in
// fixture.ldif, loaded over LDAP so that the memberof overlay fills memberOf.
//
// It needs Debian's slapd package (test/setup.sh installs it).
package slapd

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailauth/caddy-mailauth/test/daemon"
)

//go:embed fixture.ldif
var fixture string

// Fixture names, as fixture.ldif defines them.
const (
	// BaseDN is the suffix of the fixture directory.
	BaseDN = "dc=example,dc=test"
	// PeopleDN holds the users, GroupsDN the groupOfNames groups.
	PeopleDN = "ou=people," + BaseDN
	GroupsDN = "ou=groups," + BaseDN
	// ServiceDN and ServicePassword are the gateway's read-only account.
	ServiceDN       = "cn=gateway,ou=services," + BaseDN
	ServicePassword = "gateway-secret"
	// AdminDN is the rootdn; its password is random per server.
	AdminDN = "cn=admin," + BaseDN
)

// Server is a running slapd.
type Server struct {
	// URL is the plain endpoint, ldap://127.0.0.1:port (StartTLS works on it).
	URL string
	// LDAPSURL is the implicit-TLS endpoint, ldaps://127.0.0.1:port.
	LDAPSURL string
	// CACertPool and CAFile (PEM) hold the CA that signed the server's
	// certificate, which names 127.0.0.1 and localhost.
	CACertPool *x509.CertPool
	CAFile     string
	// BaseDN is the directory's suffix.
	BaseDN string
	// BindDN and BindPassword are the read-only service account.
	BindDN       string
	BindPassword string
	// AdminDN and AdminPassword may write anything (the rootdn).
	AdminDN       string
	AdminPassword string

	dir      string
	confPath string
	hosts    string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited <-chan struct{}
	output *daemon.Output
}

// Option changes how Start sets up the server.
type Option func(*options)

type options struct {
	extraLDIF []string
}

// WithLDIF adds entries, after the fixture, to the directory. Groups should
// come after their members so that memberOf is filled.
func WithLDIF(ldif string) Option {
	return func(o *options) { o.extraLDIF = append(o.extraLDIF, ldif) }
}

// startTimeout bounds how long slapd may take to accept a bind.
const startTimeout = 20 * time.Second

// Binary is the slapd executable; SLAPD_BIN overrides it.
func binary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("SLAPD_BIN"); bin != "" {
		return bin
	}
	for _, bin := range []string{"/usr/sbin/slapd", "slapd"} {
		if p, err := exec.LookPath(bin); err == nil {
			return p
		}
	}
	t.Fatalf("slapd: binary not found in SLAPD_BIN, /usr/sbin or PATH; install it with test/setup.sh (Debian packages slapd ldap-utils)")
	return ""
}

// Start launches slapd, loads the fixture and any WithLDIF entries, and
// stops slapd when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin := binary(t)
	dir := t.TempDir()
	ca, err := writeCertificates(dir)
	if err != nil {
		t.Fatalf("slapd: %v", err)
	}
	s := &Server{
		CACertPool:    ca,
		CAFile:        filepath.Join(dir, "ca.pem"),
		BaseDN:        BaseDN,
		BindDN:        ServiceDN,
		BindPassword:  ServicePassword,
		AdminDN:       AdminDN,
		AdminPassword: randomPassword(),
		dir:           dir,
		confPath:      filepath.Join(dir, "slapd.conf"),
		output:        &daemon.Output{},
	}
	if err := s.writeConfig(); err != nil {
		t.Fatalf("slapd: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("slapd output:\n%s", s.output.String())
		}
	})
	// Free ports are found by binding and releasing them, so another process
	// can take one before slapd does; slapd then exits and a retry succeeds.
	var lastErr error
	for range 3 {
		if lastErr = s.startOnFreePorts(bin); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("slapd: %v; output:\n%s", lastErr, s.output.String())
	}
	ldif := fixture + "\n\n" + strings.Join(o.extraLDIF, "\n\n")
	if err := s.load(ldif); err != nil {
		t.Fatalf("slapd: loading entries: %v", err)
	}
	return s
}

func (s *Server) startOnFreePorts(bin string) error {
	ldapPort, err := daemon.FreePort()
	if err != nil {
		return err
	}
	ldapsPort, err := daemon.FreePort()
	if err != nil {
		return err
	}
	s.URL = "ldap://127.0.0.1:" + strconv.Itoa(ldapPort)
	s.LDAPSURL = "ldaps://127.0.0.1:" + strconv.Itoa(ldapsPort)
	s.hosts = s.URL + "/ " + s.LDAPSURL + "/"
	return s.start(bin)
}

// start runs slapd in the foreground (-d 0 keeps it attached, so its PID is
// ours to stop) and waits until the admin can bind.
func (s *Server) start(bin string) error {
	cmd := exec.Command(bin, "-d", "0", "-h", s.hosts, "-f", s.confPath)
	exited, err := daemon.Start(cmd, s.output)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	if err := daemon.WaitReady(exited, startTimeout, 20*time.Millisecond, s.adminBinds); err != nil {
		s.Stop()
		return fmt.Errorf("admin bind: %w", err)
	}
	return nil
}

// adminBinds reports whether the admin can bind: slapd is serving.
func (s *Server) adminBinds() error {
	conn, err := s.adminConn()
	if err != nil {
		return err
	}
	return conn.Close()
}

func (s *Server) adminConn() (*ldap.Conn, error) {
	conn, err := ldap.DialURL(s.URL, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
	if err != nil {
		return nil, err
	}
	conn.SetTimeout(5 * time.Second)
	if err := conn.Bind(s.AdminDN, s.AdminPassword); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// Admin returns a connection bound as the rootdn, closed when the test ends,
// for tests that change the directory.
func (s *Server) Admin(t testing.TB) *ldap.Conn {
	t.Helper()
	conn, err := s.adminConn()
	if err != nil {
		t.Fatalf("slapd: binding as %s: %v", s.AdminDN, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// load adds every entry of ldif, in order, over the protocol.
func (s *Server) load(ldif string) error {
	entries, err := parseLDIF(ldif)
	if err != nil {
		return err
	}
	conn, err := s.adminConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, e := range entries {
		req := ldap.NewAddRequest(e.dn, nil)
		for _, a := range e.attrs {
			req.Attribute(a.name, a.values)
		}
		if err := conn.Add(req); err != nil {
			return fmt.Errorf("adding %s: %w", e.dn, err)
		}
	}
	return nil
}

// Stop ends slapd and waits for it to exit, so that its ports refuse
// connections when Stop returns. It may be called more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	// SIGTERM lets slapd close its database cleanly, which Restart needs;
	// it takes milliseconds, and SIGKILL is the fallback.
	daemon.Stop(cmd, exited, syscall.SIGTERM, 5*time.Second)
}

// Restart stops slapd and starts it again on the same ports with the same
// data, as an operator's restart would: clients' open connections break.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	// The old process has released its ports, but allow for a slow kernel.
	for range 3 {
		if err = s.start(binary(t)); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("slapd: restarting: %v; output:\n%s", err, s.output.String())
}

func randomPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var configTemplate = template.Must(template.New("slapd.conf").Parse(`# Written by test/slapd for one test run.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema

modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof

pidfile {{.Dir}}/slapd.pid
argsfile {{.Dir}}/slapd.args

TLSCACertificateFile {{.Dir}}/ca.pem
TLSCertificateFile {{.Dir}}/server.pem
TLSCertificateKeyFile {{.Dir}}/server-key.pem

database mdb
maxsize 67108864
suffix "{{.BaseDN}}"
rootdn "{{.AdminDN}}"
rootpw {{.AdminPassword}}
directory {{.Dir}}/db

# People bind with their own password; nobody reads it. The gateway reads
# everything else; anonymous clients read nothing.
access to attrs=userPassword
	by anonymous auth
	by * none
access to *
	by dn.exact="{{.BindDN}}" read
	by * none

overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint true
`))

func (s *Server) writeConfig() error {
	if err := os.Mkdir(filepath.Join(s.dir, "db"), 0o700); err != nil {
		return err
	}
	var buf bytes.Buffer
	err := configTemplate.Execute(&buf, map[string]string{
		"Dir":           s.dir,
		"BaseDN":        s.BaseDN,
		"AdminDN":       s.AdminDN,
		"AdminPassword": s.AdminPassword,
		"BindDN":        s.BindDN,
	})
	if err != nil {
		return err
	}
	return os.WriteFile(s.confPath, buf.Bytes(), 0o600)
}
