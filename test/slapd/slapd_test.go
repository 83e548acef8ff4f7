package slapd

import (
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

func bindAsGateway(t *testing.T, s *Server, url string) *ldap.Conn {
	t.Helper()
	conn, err := ldap.DialURL(url, ldap.DialWithTLSConfig(&tls.Config{RootCAs: s.CACertPool, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatalf("dialing %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetTimeout(5 * time.Second)
	if err := conn.Bind(s.BindDN, s.BindPassword); err != nil {
		t.Fatalf("binding as the service account: %v", err)
	}
	return conn
}

func search(t *testing.T, conn *ldap.Conn, base, filter string, attrs ...string) []*ldap.Entry {
	t.Helper()
	res, err := conn.Search(ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 5, false, filter, attrs, nil))
	if err != nil {
		t.Fatalf("searching %s under %s: %v", filter, base, err)
	}
	return res.Entries
}

func TestFixtureGroupsAreQueryableAsMemberOf(t *testing.T) {
	s := Start(t)
	conn := bindAsGateway(t, s, s.URL)
	got := search(t, conn, PeopleDN, "(uid=dave)", "memberOf")
	if len(got) != 1 {
		t.Fatalf("uid=dave: got %d entries, want 1", len(got))
	}
	want := []string{"cn=executives," + GroupsDN, "cn=finance-board," + GroupsDN}
	memberOf := got[0].GetAttributeValues("memberOf")
	slices.Sort(memberOf)
	if !slices.Equal(memberOf, want) {
		t.Errorf("dave's memberOf = %q, want %q", memberOf, want)
	}
	members := search(t, conn, BaseDN, "(memberOf=cn=it,"+GroupsDN+")", "uid")
	if len(members) != 2 {
		t.Errorf("members of cn=it found by memberOf: %d, want carol and frank", len(members))
	}
}

func TestFixtureHasNoAlice(t *testing.T) {
	s := Start(t)
	conn := bindAsGateway(t, s, s.URL)
	if got := search(t, conn, BaseDN, "(|(uid=alice)(mail=alice@*))"); len(got) != 0 {
		t.Errorf("the fixture has %d entries for alice; the integration tests need her absent from LDAP", len(got))
	}
}

func TestAnonymousClientsReadNothing(t *testing.T) {
	s := Start(t)
	conn, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := conn.Search(ldap.NewSearchRequest(BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 5, false, "(uid=*)", nil, nil))
	if err == nil && len(res.Entries) > 0 {
		t.Errorf("an anonymous search found %d entries; the ACL should hide them", len(res.Entries))
	}
}

func TestLDAPSAndStartTLSPresentACertificateForTheTestCA(t *testing.T) {
	s := Start(t)
	bindAsGateway(t, s, s.LDAPSURL)
	conn, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.StartTLS(&tls.Config{RootCAs: s.CACertPool, ServerName: "localhost", MinVersion: tls.VersionTLS12}); err != nil {
		t.Errorf("StartTLS with the test CA and server name localhost: %v", err)
	}
}

func TestWithLDIFAddsEntriesAfterTheFixture(t *testing.T) {
	s := Start(t, WithLDIF(`
dn: uid=zoe,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: zoe
cn: Zoe
sn: Zoe
mail:: em9lQGV4YW1wbGUudGVzdA==
description: a folded
  line
`))
	conn := bindAsGateway(t, s, s.URL)
	got := search(t, conn, PeopleDN, "(uid=zoe)", "mail", "description")
	if len(got) != 1 {
		t.Fatalf("uid=zoe: got %d entries, want 1", len(got))
	}
	if m := got[0].GetAttributeValue("mail"); m != "zoe@example.test" {
		t.Errorf("base64 mail = %q, want zoe@example.test", m)
	}
	if d := got[0].GetAttributeValue("description"); d != "a folded line" {
		t.Errorf("folded description = %q, want %q", d, "a folded line")
	}
}

func TestStopEndsTheProcessAndRestartKeepsTheData(t *testing.T) {
	s := Start(t)
	pid := s.cmd.Process.Pid
	s.Stop()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("slapd pid %d still exists after Stop (kill 0: %v)", pid, err)
	}
	if c, err := net.DialTimeout("tcp", s.URL[len("ldap://"):], time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", s.URL)
	}
	s.Restart(t)
	conn := bindAsGateway(t, s, s.URL)
	if got := search(t, conn, PeopleDN, "(uid=carol)"); len(got) != 1 {
		t.Errorf("after Restart, uid=carol: %d entries, want 1", len(got))
	}
}
