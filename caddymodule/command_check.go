package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/mailer"
)

func init() {
	mailauthSubcommands = append(mailauthSubcommands, checkCommand())
}

// defaultCheckLimit is how many entries of each LDAP base check looks at
// when no --limit is given: enough to catch a systematic mapping error
// (wrong mail or manager attribute) without walking a large directory.
const defaultCheckLimit = 20

// checkCommand is `caddy mailauth check`.
func checkCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "check --config <file> [--user <name>]... [--limit N] [--rcpt <address>]",
		Short: "Check mail servers, directories and users before users hit a problem",
		Long: `
check is the operator's pre-flight. It loads and validates the config, then:

- connects to every mail_server (TLS version, certificate, auth) and opens a
  MAIL FROM / RCPT TO transaction that it abandons with RSET before DATA,
  so no mail is sent;
- binds to every LDAP directory and reads its base_dn;
- looks up every local user, the users named with --user, and the first
  --limit entries of each LDAP base, under every profile that uses their
  directory, and reports those who cannot get a link: no mail, an invalid
  mail, a mail that several entries share, or, under a manager profile, no
  manager or sponsor email.

It prints one table per part and a summary, and exits non-zero when it
finds a problem, so it can run from cron or CI. It does not open the store,
so it runs beside a live Caddy.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfgFile, _ := c.Flags().GetString("config")
			adapter, _ := c.Flags().GetString("adapter")
			var opts checkOptions
			opts.users, _ = c.Flags().GetStringArray("user")
			opts.limit, _ = c.Flags().GetInt("limit")
			opts.rcpt, _ = c.Flags().GetString("rcpt")
			if opts.rcpt != "" && !validAddress(opts.rcpt) {
				return fmt.Errorf("--rcpt: %q is not a mail address", opts.rcpt)
			}
			if opts.limit < 0 {
				return fmt.Errorf("--limit must not be negative, got %d", opts.limit)
			}
			app, err := loadApp(cfgFile, adapter)
			if err != nil {
				return err
			}
			ctx := c.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			problems, err := check(ctx, c.OutOrStdout(), app, opts)
			if err != nil {
				return err
			}
			if problems > 0 {
				// The table said what; the error only sets the exit code
				// and tells a cron mail what to look for.
				return fmt.Errorf("check found %d problem(s)", problems)
			}
			return nil
		},
	}
	c.Flags().StringP("config", "c", "", "Configuration file (required)")
	c.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (default: from the file name, caddyfile for a Caddyfile)")
	c.Flags().StringArrayP("user", "u", nil, "A user to check under every profile, as they would type it; may be repeated")
	c.Flags().IntP("limit", "n", defaultCheckLimit, "How many entries of each LDAP base to check; 0 checks none")
	c.Flags().String("rcpt", "", "Recipient of the RCPT TO probe (default: each mail_server's from address)")
	return c
}

// checkOptions are check's flags after the config.
type checkOptions struct {
	// users are looked up under every profile.
	users []string
	// limit is how many entries of each LDAP base are looked up.
	limit int
	// rcpt is the RCPT TO address; empty means each server's from address.
	rcpt string
}

// Checker is a directory module that check can ask whether its
// directory answers: LDAP binds and reads its base, local has nothing to
// connect to. detail says what was checked. A directory module that is
// not a Checker is reported as not checked.
type Checker interface {
	Check(ctx context.Context) (detail string, err error)
}

// Lister is a directory module that can name its users, at most limit of
// them where listing costs queries, for check to look each one up.
type Lister interface {
	List(ctx context.Context, limit int) ([]string, error)
}

// sponsoring is a directory module whose users' approvers are sponsors
// named in the config, not managers found in a directory server, which
// check's report then calls them.
type sponsoring interface {
	Sponsored() bool
}

// Status words of the tables. PROBLEM is upper case so it stands out and
// greps apart from the rest.
const (
	statusOK      = "ok"
	statusSkipped = "skipped"
	statusProblem = "PROBLEM"
)

// check writes the report for app to w and returns how many problems it
// found. The error is for a config that does not build; everything found
// on the network or in the directories is a problem in the report.
func check(ctx context.Context, w io.Writer, app *App, opts checkOptions) (int, error) {
	servers, err := app.build()
	if err != nil {
		return 0, err
	}
	defer app.closeGuests()
	fmt.Fprintf(w, "config: ok (%d mail servers, %d directories, %d profiles)\n", len(servers), len(app.dirs), len(app.profiles))

	serverProblems := checkMailServers(ctx, w, servers, opts.rcpt)
	dirProblems, reachable := checkDirectories(ctx, w, app)
	userProblems, checked := checkUsers(ctx, w, app, reachable, opts)

	problems := serverProblems + dirProblems + userProblems
	if problems == 0 {
		fmt.Fprintf(w, "\nsummary: no problems (%d mail servers, %d directories, %d user checks)\n", len(servers), len(app.dirs), checked)
	} else {
		fmt.Fprintf(w, "\nsummary: %d problem(s): %d of %d mail servers, %d of %d directories, %d of %d user checks\n",
			problems, serverProblems, len(servers), dirProblems, len(app.dirs), userProblems, checked)
	}
	return problems, nil
}

// checkMailServers probes every server without sending mail and returns
// how many failed.
func checkMailServers(ctx context.Context, w io.Writer, servers map[string]mailer.ServerConfig, rcpt string) int {
	fmt.Fprintf(w, "\nMail servers\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "SERVER\tSTEP\tSTATUS\tDETAIL\n")
	problems := 0
	for _, name := range sortedNames(servers) {
		cfg := servers[name]
		to := rcpt
		if to == "" {
			// The sender's own address is one every relay that may send
			// as it should accept, and it names no user.
			to = cfg.From
		}
		failedStep := false
		err := mailer.ProbeEnvelope(ctx, cfg, to, func(s mailer.ProbeStep) {
			status := statusOK
			switch {
			case !s.OK:
				status, failedStep = statusProblem, true
			case s.Skipped:
				status = statusSkipped
			}
			code := ""
			if !s.OK && s.Code != 0 {
				code = fmt.Sprintf(" (reply %d)", s.Code)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\n", name, s.Name, status, s.Detail, code)
		})
		if err != nil {
			problems++
			if !failedStep {
				// Refused before the first step, so no row says why yet.
				fmt.Fprintf(tw, "%s\t\t%s\t%v\n", name, statusProblem, err)
			}
		}
	}
	return problems
}

// checkDirectories binds to every LDAP directory and returns how many
// failed and the names of the directories that can be asked about users.
func checkDirectories(ctx context.Context, w io.Writer, app *App) (int, map[string]bool) {
	fmt.Fprintf(w, "\nDirectories\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "DIRECTORY\tTYPE\tSTATUS\tDETAIL\n")
	problems := 0
	reachable := make(map[string]bool, len(app.dirs))
	for _, name := range sortedNames(app.dirs) {
		mod := app.dirModules[name]
		kind := mod.CaddyModule().ID.Name()
		c, ok := mod.(Checker)
		if !ok {
			reachable[name] = true
			fmt.Fprintf(tw, "%s\t%s\t%s\tnot checked: the directory cannot be asked\n", name, kind, statusSkipped)
			continue
		}
		detail, err := c.Check(ctx)
		if err != nil {
			problems++
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", name, kind, statusProblem, err)
			continue
		}
		reachable[name] = true
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, kind, statusOK, detail)
	}
	return problems, reachable
}

// userCandidate is one user to check: what they would type, and the
// directory they were listed from ("" for a --user, checked under every
// profile).
type userCandidate struct {
	input, dir string
}

// checkUsers looks up every candidate user under the profiles that could
// apply and returns how many checks found a problem, and how many ran.
func checkUsers(ctx context.Context, w io.Writer, app *App, reachable map[string]bool, opts checkOptions) (problems, checked int) {
	fmt.Fprintf(w, "\nUsers\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "USER\tPROFILE\tDIRECTORY\tSTATUS\tDETAIL\n")

	var candidates []userCandidate
	for _, u := range opts.users {
		candidates = append(candidates, userCandidate{input: u})
	}
	for _, name := range sortedNames(app.dirs) {
		if !reachable[name] {
			continue // already a problem in the directories table
		}
		l, ok := app.dirModules[name].(Lister)
		if !ok {
			continue // only --user names its users
		}
		names, err := l.List(ctx, opts.limit)
		if err != nil {
			problems++
			fmt.Fprintf(tw, "(listing)\t\t%s\t%s\t%v\n", name, statusProblem, err)
			continue
		}
		for _, n := range names {
			candidates = append(candidates, userCandidate{input: n, dir: name})
		}
	}

	profileNames := sortedNames(app.profiles)
	for _, c := range candidates {
		for _, pn := range profileNames {
			p := app.profiles[pn]
			if c.dir != "" && !usesDirectory(p, c.dir) {
				continue
			}
			checked++
			r := checkUser(ctx, app, p, c.input)
			if r.directory == "" {
				// A failed lookup returns no identity; a listed user's
				// directory is still known.
				r.directory = c.dir
			}
			if r.status == statusProblem {
				problems++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.input, pn, orNone(r.directory), r.status, r.detail)
		}
	}
	if len(candidates) == 0 {
		fmt.Fprintf(tw, "(none)\t\t\t\tno local users, no --user, and no LDAP entries listed\n")
	}
	return problems, checked
}

func usesDirectory(p *approval.Profile, dir string) bool {
	return slices.ContainsFunc(p.Directories, func(d directory.Directory) bool { return d.Name() == dir })
}

// userResult is one row of the users table.
type userResult struct {
	directory, status, detail string
}

// checkUser looks input up as a login under profile p would, and says
// whether that login could send its mail.
func checkUser(ctx context.Context, app *App, p *approval.Profile, input string) userResult {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := directory.Lookup(ctx, p.Directories, input, nil)
	switch {
	case errors.Is(err, directory.ErrNotFound):
		return userResult{status: statusProblem, detail: "no directory of the profile knows this user"}
	case errors.Is(err, directory.ErrNoEmail):
		return userResult{status: statusProblem, detail: "no mail: " + err.Error()}
	case errors.Is(err, directory.ErrAmbiguous):
		return userResult{status: statusProblem, detail: "ambiguous: " + err.Error()}
	case err != nil:
		return userResult{status: statusProblem, detail: "lookup failed: " + err.Error()}
	}
	bad := func(detail string) userResult {
		return userResult{directory: id.Directory, status: statusProblem, detail: detail}
	}
	if _, err := mail.ParseAddress(id.Email); err != nil {
		return bad(fmt.Sprintf("invalid mail %q: %v", id.Email, err))
	}
	detail := "mail " + id.Email
	if p.Type == approval.TypeManager {
		switch {
		case id.ManagerEmail == "" && sponsored(app, id.Directory):
			return bad("no sponsor: a manager profile has nobody to ask for approval")
		case id.ManagerEmail == "":
			return bad("no manager email (manager attribute missing, manager entry missing, or manager without mail): a manager profile has nobody to ask for approval")
		}
		if _, err := mail.ParseAddress(id.ManagerEmail); err != nil {
			return bad(fmt.Sprintf("invalid manager mail %q: %v", id.ManagerEmail, err))
		}
		now, later := approval.ApproverChain(ctx, p.Directories, p, id.Email, id.ManagerEmail)
		switch {
		case len(now) == 0:
			return bad(fmt.Sprintf("self-approval: the manager or sponsor %s is the user themself, and there is nobody else to ask (no manager's manager, no other approvers): requests fail closed", id.ManagerEmail))
		case now[0] != id.ManagerEmail:
			detail += fmt.Sprintf(", manager %s is the user themself, so approved by %s", id.ManagerEmail, strings.Join(now, ", "))
		default:
			detail += ", approved by " + id.ManagerEmail
		}
		if p.EscalateAfter > 0 && len(later) > 0 {
			detail += ", escalating to " + strings.Join(later, ", ")
		}
	}
	// Users may type their mail instead of their name; a mail two entries
	// share then finds nobody, and the login silently sends nothing.
	if !strings.EqualFold(input, id.Email) {
		if _, err := directory.Lookup(ctx, p.Directories, id.Email, nil); errors.Is(err, directory.ErrAmbiguous) {
			return bad(fmt.Sprintf("mail %s is shared: signing in with it fails (%v)", id.Email, err))
		}
	}
	return userResult{directory: id.Directory, status: statusOK, detail: detail}
}

// sponsored reports whether the directory named dir names its users'
// approvers as sponsors, so that a missing approver is a missing sponsor.
func sponsored(app *App, dir string) bool {
	s, ok := app.dirModules[dir].(sponsoring)
	return ok && s.Sponsored()
}

func sortedNames[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
