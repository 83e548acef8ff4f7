package approval

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/mailauth/caddy-mailauth/directory"
)

// Policy chooses a profile for the users whose attribute matches one of
// its values. Policies are tried top to bottom; the first match applies.
type Policy struct {
	// Name is the policy's configured name.
	Name string
	// Profile is applied to matching users.
	Profile *Profile
	// Directory, when set, limits the policy to users from that directory.
	Directory string
	// Attribute is the identity attribute compared, such as "memberOf".
	Attribute string
	// Values as configured, for explanations.
	Values []string

	matchers []valueMatcher
	// index numbers the policy among the service's, from 1, for sessions'
	// policy bit sets; 0 until a service numbers it.
	index int
}

type valueMatcher struct {
	raw string
	// Exactly one of the following is set. Wildcard parts are kept
	// lower-cased; exact values as written. Both ignore case, as LDAP
	// equality does.
	exact    string
	wildcard []string // the parts between '*'s
	re       *regexp.Regexp
}

// NewPolicy checks and compiles a policy. A value written /…/ is a regular
// expression, taken as written ((?i) makes it ignore case); a value with
// '*' is a wildcard; anything else is an exact value. Exact and wildcard
// values ignore case. A policy's directory must be one of its profile's
// fallback directories, or the policy could never apply.
func NewPolicy(name string, p *Profile, dir, attribute string, values []string) (*Policy, error) {
	field := func(f, format string, args ...any) error {
		return fmt.Errorf("policy %q: %s: %s", name, f, fmt.Sprintf(format, args...))
	}
	if p == nil {
		return nil, field("profile", "required")
	}
	if attribute == "" {
		return nil, field("attribute", "required")
	}
	if len(values) == 0 {
		return nil, field("values", "name at least one value")
	}
	if dir != "" && !p.hasDirectory(dir) {
		return nil, field("directory", "%q is not in the fallback list of profile %q (%s)", dir, p.Name, p.directoryNames())
	}
	pol := &Policy{Name: name, Profile: p, Directory: dir, Attribute: attribute, Values: values}
	for _, v := range values {
		m := valueMatcher{raw: v}
		switch {
		case len(v) >= 2 && v[0] == '/' && v[len(v)-1] == '/':
			re, err := regexp.Compile(v[1 : len(v)-1])
			if err != nil {
				return nil, field("values", "%q is not a valid regular expression: %v", v, err)
			}
			m.re = re
		case strings.Contains(v, "*"):
			m.wildcard = strings.Split(strings.ToLower(v), "*")
		default:
			// Kept as written: EqualFold ignores case on both sides, while
			// lower-casing first would break values such as "İ", whose
			// lower case does not fold back to it.
			m.exact = v
		}
		pol.matchers = append(pol.matchers, m)
	}
	return pol, nil
}

// Match reports whether the policy applies to id. It builds no strings, so
// a login pays only for the comparisons.
func (p *Policy) Match(id *directory.Identity) bool {
	ok, _ := p.match(id, false)
	return ok
}

// Explain is Match with the reason, for `caddy mailauth explain`.
func (p *Policy) Explain(id *directory.Identity) (bool, string) {
	return p.match(id, true)
}

func (p *Policy) match(id *directory.Identity, explain bool) (bool, string) {
	// Reasons are formatted only when asked for: boxing the arguments
	// would otherwise allocate on every login.
	if p.Directory != "" && id.Directory != p.Directory {
		if !explain {
			return false, ""
		}
		return false, fmt.Sprintf("user is from directory %q, policy wants %q", id.Directory, p.Directory)
	}
	if p.Directory == "" && !p.Profile.hasDirectory(id.Directory) {
		if !explain {
			return false, ""
		}
		return false, fmt.Sprintf("directory %q is not in profile %q's fallback list", id.Directory, p.Profile.Name)
	}
	vals := attributeValues(id, p.Attribute)
	for _, v := range vals {
		for i := range p.matchers {
			if p.matchers[i].match(v) {
				if !explain {
					return true, ""
				}
				return true, fmt.Sprintf("%s %q matches %q", p.Attribute, v, p.matchers[i].raw)
			}
		}
	}
	if !explain {
		return false, ""
	}
	if len(vals) == 0 {
		return false, fmt.Sprintf("user has no %s attribute", p.Attribute)
	}
	return false, fmt.Sprintf("none of the %d %s values matches %q", len(vals), p.Attribute, p.Values)
}

func (m *valueMatcher) match(v string) bool {
	switch {
	case m.re != nil:
		return m.re.MatchString(v)
	case m.wildcard != nil:
		return wildcardMatch(m.wildcard, lower(v))
	default:
		return strings.EqualFold(v, m.exact)
	}
}

// wildcardMatch matches s against a pattern split on '*': the first part
// must be a prefix, the last a suffix, and the ones between must appear in
// order. Only '*' is special, so values such as DNs with '?' or '[' match
// literally.
func wildcardMatch(parts []string, s string) bool {
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

// lower is strings.ToLower without the allocation for values that are
// lower-case ASCII already, which most directory values are.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return strings.ToLower(s)
		}
	}
	return s
}

// attributeValues finds an attribute ignoring the case of its name, as
// LDAP attribute names are case-insensitive ("memberOf", "memberof").
func attributeValues(id *directory.Identity, name string) []string {
	if v, ok := id.Attributes[name]; ok {
		return v
	}
	for k, v := range id.Attributes {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// Site is what one protected site uses to run logins: a default profile
// and the ordered policies that can override it.
type Site struct {
	// Default applies when no policy matches.
	Default *Profile
	// Policies are tried in order.
	Policies []*Policy
	// Directories is where users are looked up: the default profile's
	// fallback directories, then those of each policy's profile, in order
	// and without repeats.
	Directories []directory.Directory

	// ID names the site by its default profile and policies; see
	// Service.Site.
	ID string

	// longestLink is the longest link lifetime of any profile the site may
	// pick; a login is kept at least that long.
	longestLink time.Duration
}

// NewSite builds a site from its default profile and policies.
func NewSite(def *Profile, policies []*Policy) *Site {
	s := &Site{Default: def, Policies: policies, ID: siteID(def, policies)}
	seen := map[string]bool{}
	add := func(p *Profile) {
		s.longestLink = max(s.longestLink, p.LinkExpiration)
		for _, d := range p.Directories {
			if !seen[d.Name()] {
				seen[d.Name()] = true
				s.Directories = append(s.Directories, d)
			}
		}
	}
	add(def)
	for _, p := range policies {
		add(p.Profile)
	}
	return s
}

// Decision is the outcome of choosing a profile for a user.
type Decision struct {
	// Profile is the chosen profile, or nil when the user's directory is
	// in no profile this site may use for them.
	Profile *Profile
	// Policy is the matching policy, or nil for the default profile.
	Policy *Policy
	// Trace says, per policy in order, whether it matched and why.
	Trace []PolicyResult
}

// PolicyResult is one policy's verdict for one user.
type PolicyResult struct {
	Policy  *Policy
	Matched bool
	Reason  string
}

// Choose evaluates the site's policies for id, top to bottom. With trace
// set it records every policy's verdict (for `caddy mailauth explain`);
// otherwise it stops at the first match.
func (s *Site) Choose(id *directory.Identity, trace bool) Decision {
	var d Decision
	for _, p := range s.Policies {
		ok, why := p.match(id, trace)
		if trace {
			d.Trace = append(d.Trace, PolicyResult{Policy: p, Matched: ok, Reason: why})
		}
		if ok && d.Policy == nil {
			d.Policy, d.Profile = p, p.Profile
			if !trace {
				return d
			}
		}
	}
	if d.Policy == nil && s.Default.hasDirectory(id.Directory) {
		d.Profile = s.Default
	}
	return d
}

// Approvers says who may be asked to approve logins on the site: users
// themselves, managers, or both (when policies mix profile types). The
// waiting page's wording depends only on this, never on the user, so it
// reveals nothing about who has an account.
func (s *Site) Approvers() (users, managers bool) {
	for _, p := range append([]*Profile{s.Default}, s.policyProfiles()...) {
		if p.Type == TypeManager {
			managers = true
		} else {
			users = true
		}
	}
	return users, managers
}

// NumberMatching says whether the waiting page shows a number to match:
// when any profile the site may pick asks for it. It depends only on the
// site, so the page says nothing about the user.
func (s *Site) NumberMatching() bool {
	for _, p := range append([]*Profile{s.Default}, s.policyProfiles()...) {
		if p.numberMatching() {
			return true
		}
	}
	return false
}

// directory returns the site's directory with the given name, or nil.
func (s *Site) directory(name string) directory.Directory {
	for _, d := range s.Directories {
		if d.Name() == name {
			return d
		}
	}
	return nil
}

// CodeFallback says whether the waiting page offers a box for the mailed
// code: when any profile the site may pick mails one. Like the wording, it
// depends only on the site, so the page never tells which profile a user
// got.
func (s *Site) CodeFallback() bool {
	for _, p := range append([]*Profile{s.Default}, s.policyProfiles()...) {
		if p.codeFallback() {
			return true
		}
	}
	return false
}

func (s *Site) policyProfiles() []*Profile {
	out := make([]*Profile, len(s.Policies))
	for i, p := range s.Policies {
		out[i] = p.Profile
	}
	return out
}

func (p *Profile) hasDirectory(name string) bool {
	for _, d := range p.Directories {
		if d.Name() == name {
			return true
		}
	}
	return false
}

func (p *Profile) directoryNames() string {
	names := make([]string, len(p.Directories))
	for i, d := range p.Directories {
		names[i] = d.Name()
	}
	return strings.Join(names, ", ")
}
