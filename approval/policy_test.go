package approval

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mailauth/caddy-mailauth/directory"
)

type namedDir string

func (n namedDir) Name() string { return string(n) }
func (n namedDir) Lookup(context.Context, string) (*directory.Identity, error) {
	return nil, directory.ErrNotFound
}

func profileWith(name string, dirs ...string) *Profile {
	p := &Profile{Name: name}
	for _, d := range dirs {
		p.Directories = append(p.Directories, namedDir(d))
	}
	return p
}

func identity(dir string, attrs map[string][]string) *directory.Identity {
	return &directory.Identity{Username: "u", Directory: dir, Attributes: attrs}
}

func TestPolicyValuesMatchExactlyByWildcardOrRegex(t *testing.T) {
	corp := profileWith("sensitive", "corp")
	for _, tc := range []struct {
		value, attr string
		want        bool
	}{
		{"IT", "it", true},
		{"IT", "IT Ops", false},
		{"cn=executives,*", "CN=Executives,ou=groups,dc=example,dc=test", true},
		{"cn=executives,*", "cn=exec,ou=groups", false},
		{"*,ou=groups,*", "cn=x,ou=groups,dc=t", true},
		{"*finance*", "cn=board-FINANCE-eu", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "acb", false},
		{"ab*ba", "aba", false},
		{"cn=[x]?", "cn=[x]?", true},
		{"/^cn=finance-.*$/", "cn=finance-board", true},
		{"/^cn=finance-.*$/", "CN=Finance-board", false},
		{"/(?i)^cn=finance-.*$/", "CN=Finance-board", true},
	} {
		pol, err := NewPolicy("p", corp, "corp", "memberOf", []string{tc.value})
		if err != nil {
			t.Fatal(err)
		}
		got, why := pol.Explain(identity("corp", map[string][]string{"memberOf": {tc.attr}}))
		if got != tc.want {
			t.Errorf("value %q against %q: matched=%v (%s), want %v", tc.value, tc.attr, got, why, tc.want)
		}
	}
}

func TestPolicyMatchesAnyValueOfAMultiValuedAttribute(t *testing.T) {
	pol, _ := NewPolicy("p", profileWith("s", "corp"), "", "memberof", []string{"cn=executives,*"})
	id := identity("corp", map[string][]string{"memberOf": {"cn=staff,ou=g", "cn=executives,ou=g"}})
	if ok, why := pol.Explain(id); !ok {
		t.Fatalf("the second value of memberOf should match (attribute names ignore case): %s", why)
	}
}

func TestPolicyAppliesOnlyToItsDirectory(t *testing.T) {
	p := profileWith("s", "corp", "staff")
	pol, _ := NewPolicy("p", p, "corp", "department", []string{"IT"})
	if pol.Match(identity("staff", map[string][]string{"department": {"IT"}})) {
		t.Fatal("a policy for directory corp matched a user from staff")
	}
	any, _ := NewPolicy("q", p, "", "department", []string{"IT"})
	if any.Match(identity("other", map[string][]string{"department": {"IT"}})) {
		t.Fatal("a policy without a directory matched a user from a directory outside its profile")
	}
}

func TestNewPolicyRefusesMistakesNamingTheField(t *testing.T) {
	p := profileWith("daily", "staff")
	for _, tc := range []struct {
		dir, attr string
		values    []string
		want      string
	}{
		{"corp", "memberOf", []string{"x"}, `policy "p": directory: "corp" is not in the fallback list of profile "daily" (staff)`},
		{"", "memberOf", []string{"/(unclosed/"}, `policy "p": values: "/(unclosed/" is not a valid regular expression`},
		{"", "", []string{"x"}, `policy "p": attribute: required`},
		{"", "memberOf", nil, `policy "p": values:`},
	} {
		_, err := NewPolicy("p", p, tc.dir, tc.attr, tc.values)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want error containing %q, got %v", tc.want, err)
		}
	}
	if _, err := NewPolicy("p", nil, "", "a", []string{"x"}); err == nil || !strings.Contains(err.Error(), "profile") {
		t.Errorf("a policy without a profile: got %v", err)
	}
}

func TestSiteChoosesFirstMatchingPolicyElseDefault(t *testing.T) {
	daily := profileWith("daily", "staff", "corp")
	sensitive := profileWith("sensitive", "corp")
	it := profileWith("it", "corp")
	execs, _ := NewPolicy("execs", sensitive, "corp", "memberOf", []string{"cn=executives,*"})
	itPol, _ := NewPolicy("it", it, "corp", "department", []string{"IT"})
	site := NewSite(daily, []*Policy{execs, itPol})

	both := identity("corp", map[string][]string{"memberOf": {"cn=executives,ou=g"}, "department": {"IT"}})
	if d := site.Choose(both, false); d.Policy != execs || d.Profile != sensitive {
		t.Fatalf("the first matching policy should win, got %+v", d)
	}
	if d := site.Choose(identity("corp", map[string][]string{"department": {"it"}}), false); d.Policy != itPol {
		t.Fatalf("the second policy should match when the first does not, got %+v", d)
	}
	if d := site.Choose(identity("staff", nil), false); d.Policy != nil || d.Profile != daily {
		t.Fatalf("no match should fall back to the default profile, got %+v", d)
	}
	d := site.Choose(both, true)
	if len(d.Trace) != 2 || !d.Trace[0].Matched || !d.Trace[1].Matched || d.Policy != execs {
		t.Fatalf("a traced choice lists every policy's verdict and still applies the first: %+v", d)
	}
}

func TestSiteRefusesAUserFromADirectoryNoProfileUses(t *testing.T) {
	daily := profileWith("daily", "staff")
	sensitive := profileWith("sensitive", "corp")
	execs, _ := NewPolicy("execs", sensitive, "corp", "memberOf", []string{"cn=executives,*"})
	site := NewSite(daily, []*Policy{execs})
	if d := site.Choose(identity("corp", map[string][]string{"memberOf": {"cn=staff"}}), false); d.Profile != nil {
		t.Fatalf("a corp user matching no policy must not get daily, which does not use corp: %+v", d)
	}
}

func TestSiteLooksUpDefaultDirectoriesFirstWithoutRepeats(t *testing.T) {
	daily := profileWith("daily", "staff", "corp")
	sensitive := profileWith("sensitive", "corp", "vip")
	pol, _ := NewPolicy("p", sensitive, "", "a", []string{"x"})
	site := NewSite(daily, []*Policy{pol})
	var got []string
	for _, d := range site.Directories {
		got = append(got, d.Name())
	}
	if strings.Join(got, ",") != "staff,corp,vip" {
		t.Fatalf("site directories = %v, want staff,corp,vip", got)
	}
}

// BenchmarkChoose50Policies evaluates 50 policies of mixed kinds where only
// the last one matches, the worst case for a login.
func BenchmarkChoose50Policies(b *testing.B) {
	p := profileWith("p", "corp")
	var pols []*Policy
	for i := range 49 {
		var v string
		switch i % 3 {
		case 0:
			v = fmt.Sprintf("cn=group-%d,ou=groups,dc=example,dc=test", i)
		case 1:
			v = fmt.Sprintf("cn=team-%d,*", i)
		default:
			v = fmt.Sprintf("/^cn=dept-%d-[a-z]+,/", i)
		}
		pol, _ := NewPolicy(fmt.Sprint(i), p, "corp", "memberOf", []string{v})
		pols = append(pols, pol)
	}
	last, _ := NewPolicy("last", p, "corp", "department", []string{"IT"})
	site := NewSite(p, append(pols, last))
	id := identity("corp", map[string][]string{
		"memberOf":   {"cn=staff,ou=groups,dc=example,dc=test", "cn=vpn-users,ou=groups,dc=example,dc=test", "cn=wiki,ou=groups,dc=example,dc=test"},
		"department": {"IT"},
	})
	b.ReportAllocs()
	for b.Loop() {
		if d := site.Choose(id, false); d.Policy != last {
			b.Fatal("the last policy should match")
		}
	}
}
