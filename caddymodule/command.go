package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/directory"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "mailauth",
		Usage: "explain|check|send-test|preview --config <file> ...",
		Short: "Tools for operating caddy-mailauth",
		Long: `
Tools for operating caddy-mailauth. None of them opens the store, so they
run beside a live Caddy.

explain looks a user up the way a login on the site would: the directory
that answered, the identity's email, manager email and attributes, each
policy with whether it matched and why, and the profile chosen.

check is the pre-flight: it probes every mail server up to RCPT TO without
sending, binds to every directory, and reports users who could not get a
link. It exits non-zero on problems, for cron and CI.

send-test sends one test mail through a named server and reports each step;
preview writes a profile's rendered mail to files.`,
		CobraFunc: func(cmd *cobra.Command) {
			explain := &cobra.Command{
				Use:   "explain --config <file> [--site <host>] <user>",
				Short: "Show how a login for <user> would be handled on a site",
				Args:  cobra.ExactArgs(1),
				RunE: func(c *cobra.Command, args []string) error {
					cfgFile, _ := c.Flags().GetString("config")
					adapter, _ := c.Flags().GetString("adapter")
					site, _ := c.Flags().GetString("site")
					return explainCommand(c.Context(), c.OutOrStdout(), cfgFile, adapter, site, args[0])
				},
			}
			explain.Flags().StringP("config", "c", "", "Configuration file (required)")
			explain.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (default: from the file name, caddyfile for a Caddyfile)")
			explain.Flags().StringP("site", "s", "", "Host of the protected site; may be left out when one site uses mailauth")
			cmd.AddCommand(explain)
			for _, c := range mailauthSubcommands {
				cmd.AddCommand(c)
			}
		},
	})
}

// mailauthSubcommands are further `caddy mailauth` sub-commands, added by
// the init functions of the files that implement them.
var mailauthSubcommands []*cobra.Command

func explainCommand(ctx context.Context, w io.Writer, cfgFile, adapter, site, user string) error {
	if cfgFile == "" {
		return errors.New("--config is required")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	cfgJSON, _, _, err := caddycmd.LoadConfig(cfgFile, adapter)
	if err != nil {
		return err
	}
	var cfg struct {
		Apps struct {
			Mailauth *App            `json:"mailauth"`
			HTTP     json.RawMessage `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return fmt.Errorf("reading the config: %w", err)
	}
	app := cfg.Apps.Mailauth
	if app == nil {
		return errors.New("the config has no mailauth app (global mailauth block)")
	}
	h, err := findHandler(cfg.Apps.HTTP, site)
	if err != nil {
		return err
	}
	if _, err := app.build(); err != nil {
		return err
	}
	defer app.closeGuests()
	s, err := app.site(h.DefaultProfile, h.Policies)
	if err != nil {
		return err
	}
	return explain(ctx, w, s, user)
}

// explain writes the report for one user on one site.
func explain(ctx context.Context, w io.Writer, s *approval.Site, user string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	var dirNames []string
	for _, d := range s.Directories {
		dirNames = append(dirNames, d.Name())
	}
	fmt.Fprintf(tw, "input:\t%s\n", user)
	fmt.Fprintf(tw, "directories:\t%s (tried in this order)\n", strings.Join(dirNames, ", "))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := directory.Lookup(ctx, s.Directories, user, func(d directory.Directory, err error) {
		fmt.Fprintf(tw, "skipped:\t%s could not answer: %v\n", d.Name(), err)
	})
	if errors.Is(err, directory.ErrNotFound) {
		fmt.Fprintf(tw, "result:\tno directory knows %q: a login gets the generic page and no mail\n", user)
		return nil
	}
	if err != nil {
		fmt.Fprintf(tw, "result:\tlookup failed, so a login gets the generic page and no mail\n")
		fmt.Fprintf(tw, "error:\t%v\n", err)
		return nil
	}
	fmt.Fprintf(tw, "directory:\t%s\n", id.Directory)
	fmt.Fprintf(tw, "username:\t%s\n", id.Username)
	fmt.Fprintf(tw, "name:\t%s\n", orNone(id.Name))
	fmt.Fprintf(tw, "email:\t%s\n", orNone(id.Email))
	fmt.Fprintf(tw, "manager email:\t%s\n", orNone(id.ManagerEmail))
	fmt.Fprintf(tw, "attributes:\t\n")
	keys := make([]string, 0, len(id.Attributes))
	for k := range id.Attributes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range id.Attributes[k] {
			fmt.Fprintf(tw, "  %s:\t%s\n", k, v)
		}
	}
	d := s.Choose(id, true)
	if len(d.Trace) == 0 {
		fmt.Fprintf(tw, "policies:\tnone on this site\n")
	} else {
		fmt.Fprintf(tw, "policies:\ttop to bottom, the first match applies\n")
	}
	for i, r := range d.Trace {
		verdict := "no match"
		if r.Matched {
			verdict = "match"
			if d.Policy == r.Policy {
				verdict = "MATCH, applied"
			}
		}
		fmt.Fprintf(tw, "  %d. %s:\t%s: %s\n", i+1, r.Policy.Name, verdict, r.Reason)
	}
	if d.Profile == nil {
		fmt.Fprintf(tw, "profile:\tnone: no policy matched and the default profile %q does not use directory %q, so a login gets no mail\n", s.Default.Name, id.Directory)
		return nil
	}
	how := "default profile"
	if d.Policy != nil {
		how = "from policy " + d.Policy.Name
	}
	fmt.Fprintf(tw, "profile:\t%s (%s; type %s, links last %s, mail via %s)\n", d.Profile.Name, how, d.Profile.Type, mailtemplate.HumanDuration(d.Profile.LinkExpiration), strings.Join(d.Profile.MailServers, ", "))
	switch {
	case d.Profile.Type == approval.TypeUser && id.Email == "":
		fmt.Fprintf(tw, "warning:\tthe user has no email address, so no sign-in link can be sent\n")
	case d.Profile.Type == approval.TypeManager && id.ManagerEmail == "":
		fmt.Fprintf(tw, "warning:\tthe user has no manager email, so no approval request can be sent\n")
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// findHandler finds the mailauth handler that serves host in the http app's
// JSON: it walks routes and subroutes, skipping routes whose host matcher
// does not include host. With host empty, exactly one mailauth handler
// must exist.
func findHandler(httpApp json.RawMessage, host string) (*Handler, error) {
	var app struct {
		Servers map[string]struct {
			Routes []route `json:"routes"`
		} `json:"servers"`
	}
	if len(httpApp) > 0 {
		if err := json.Unmarshal(httpApp, &app); err != nil {
			return nil, fmt.Errorf("reading the http app: %w", err)
		}
	}
	var found []*Handler
	for _, srv := range app.Servers {
		collectHandlers(srv.Routes, strings.ToLower(host), &found)
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && host != "":
		return nil, fmt.Errorf("no site for %q uses the mailauth directive", host)
	case len(found) == 0:
		return nil, errors.New("no site uses the mailauth directive")
	case host == "":
		return nil, fmt.Errorf("%d sites use mailauth; name one with --site", len(found))
	}
	return found[0], nil
}

type route struct {
	Match []struct {
		Host []string `json:"host"`
	} `json:"match"`
	Handle []json.RawMessage `json:"handle"`
}

func collectHandlers(routes []route, host string, found *[]*Handler) {
	for _, r := range routes {
		if host != "" && !routeServesHost(r, host) {
			continue
		}
		for _, raw := range r.Handle {
			var h struct {
				Handler string  `json:"handler"`
				Routes  []route `json:"routes"`
			}
			if json.Unmarshal(raw, &h) != nil {
				continue
			}
			switch h.Handler {
			case "mailauth":
				var m Handler
				if json.Unmarshal(raw, &m) == nil {
					*found = append(*found, &m)
				}
			case "subroute":
				collectHandlers(h.Routes, host, found)
			}
		}
	}
}

// routeServesHost reports whether a route's host matchers (if any) cover
// host, with Caddy's "*." wildcard for one label.
func routeServesHost(r route, host string) bool {
	hasHost := false
	for _, m := range r.Match {
		for _, h := range m.Host {
			hasHost = true
			h = strings.ToLower(h)
			if h == host || (strings.HasPrefix(h, "*.") && strings.Count(host, ".") == strings.Count(h, ".") && strings.HasSuffix(host, h[1:])) {
				return true
			}
		}
	}
	return !hasHost
}
