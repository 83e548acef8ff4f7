package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/locale"
	"github.com/mailauth/caddy-mailauth/mailer"
)

func init() {
	mailauthSubcommands = append(mailauthSubcommands, sendTestCommand(), previewCommand())
}

// sendTestCommand is `caddy mailauth send-test`.
func sendTestCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "send-test --config <file> --server <name> --to <address>",
		Short: "Send one test mail through a mail_server and report each step",
		Long: `
send-test sends one test mail through the named mail_server of the config,
with the same TLS, CA, authentication and HELO settings as sign-in mail, and
prints each step: connect, EHLO, TLS (version and cipher), AUTH, and whether
the server accepted the mail, with its reply. It exits non-zero when a step
fails. It does not open the store, so it runs beside a live Caddy.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfgFile, _ := c.Flags().GetString("config")
			adapter, _ := c.Flags().GetString("adapter")
			server, _ := c.Flags().GetString("server")
			to, _ := c.Flags().GetString("to")
			return sendTest(c.Context(), c.OutOrStdout(), cfgFile, adapter, server, to)
		},
	}
	c.Flags().StringP("config", "c", "", "Configuration file (required)")
	c.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (default: from the file name, caddyfile for a Caddyfile)")
	c.Flags().StringP("server", "s", "", "Name of the mail_server to use; may be left out when there is one")
	c.Flags().StringP("to", "t", "", "Recipient of the test mail (required)")
	return c
}

// previewCommand is `caddy mailauth preview`.
func previewCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "preview --config <file> --profile <name> [--out <dir>]",
		Short: "Render a profile's mail with sample data into files",
		Long: `
preview renders the mail of the named profile, with its subject, message and
HTML templates, for a made-up request, and writes the text and HTML parts to
<profile>.txt and <profile>.html in --out (default: the current directory).
It prints the subject and the two paths. Open the HTML file in a browser or
mail client to see what users will get.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfgFile, _ := c.Flags().GetString("config")
			adapter, _ := c.Flags().GetString("adapter")
			profile, _ := c.Flags().GetString("profile")
			out, _ := c.Flags().GetString("out")
			return preview(c.OutOrStdout(), cfgFile, adapter, profile, out)
		},
	}
	c.Flags().StringP("config", "c", "", "Configuration file (required)")
	c.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (default: from the file name, caddyfile for a Caddyfile)")
	c.Flags().StringP("profile", "p", "", "Name of the profile; may be left out when there is one")
	c.Flags().StringP("out", "o", ".", "Directory to write the files to")
	return c
}

// loadApp reads the mailauth app from a config file, as `caddy run` would
// adapt it.
func loadApp(cfgFile, adapter string) (*App, error) {
	if cfgFile == "" {
		return nil, errors.New("--config is required")
	}
	cfgJSON, _, _, err := caddycmd.LoadConfig(cfgFile, adapter)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Apps struct {
			Mailauth *App `json:"mailauth"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	if cfg.Apps.Mailauth == nil {
		return nil, errors.New("the config has no mailauth app (global mailauth block)")
	}
	return cfg.Apps.Mailauth, nil
}

// pick returns name, or the only key of m when name is empty.
func pick[T any](m map[string]T, name, what, flag string) (string, error) {
	if name == "" {
		if len(m) != 1 {
			return "", fmt.Errorf("the config has %d %ss (%s); name one with --%s", len(m), what, names(m), flag)
		}
		for n := range m {
			return n, nil
		}
	}
	if _, ok := m[name]; !ok {
		return "", fmt.Errorf("no %s named %q (have: %s)", what, name, names(m))
	}
	return name, nil
}

func sendTest(ctx context.Context, w io.Writer, cfgFile, adapter, server, to string) error {
	if to == "" {
		return errors.New("--to is required")
	}
	if !validAddress(to) {
		return fmt.Errorf("--to: %q is not a mail address", to)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	app, err := loadApp(cfgFile, adapter)
	if err != nil {
		return err
	}
	server, err = pick(app.MailServers, server, "mail_server", "server")
	if err != nil {
		return err
	}
	// Only the chosen server is checked and used: another server's missing
	// password or CA file is not this test's business.
	one := &App{MailServers: map[string]*MailServerConfig{server: app.MailServers[server]}}
	servers, err := one.mailServers(caddy.NewReplacer())
	if err != nil {
		return err
	}
	cfg := servers[server]
	fmt.Fprintf(w, "sending a test mail to %s through mail_server %q (%s)\n", to, server, cfg.Host)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	err = mailer.Probe(ctx, cfg, to, func(s mailer.ProbeStep) {
		status := "ok"
		switch {
		case !s.OK:
			status = "FAILED"
		case s.Skipped:
			status = "skipped"
		}
		code := ""
		if s.Code != 0 {
			code = fmt.Sprintf(" (reply %d)", s.Code)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s%s\n", s.Name, status, s.Detail, code)
	})
	tw.Flush()
	if err != nil {
		return fmt.Errorf("the test mail was not sent: %w", err)
	}
	fmt.Fprintf(w, "the server accepted the test mail for %s\n", to)
	return nil
}

func preview(w io.Writer, cfgFile, adapter, profile, out string) error {
	app, err := loadApp(cfgFile, adapter)
	if err != nil {
		return err
	}
	profile, err = pick(app.Profiles, profile, "profile", "profile")
	if err != nil {
		return err
	}
	// build parses every template, so a broken one fails here as at load.
	if _, err := app.build(); err != nil {
		return err
	}
	defer app.closeGuests()
	p := app.profiles[profile]
	d := mailtemplate.SampleData()
	d.Link = p.Server + approval.VerifyPath + "?token=SAMPLE-TOKEN-NOT-VALID"
	d.DenyLink = ""
	if p.Type == approval.TypeManager {
		d.DenyLink = p.Server + approval.VerifyPath + "?token=SAMPLE-DENY-TOKEN-NOT-VALID"
	}
	if u, err := url.Parse(p.Server); err == nil {
		d.App = u.Host
	}
	d.RequestedAt = time.Now().Truncate(time.Minute)
	d.ExpiresAt = d.RequestedAt.Add(p.LinkExpiration)
	// The preview is in the deployment's language and brand, as a mail
	// to someone whose directory entry names no language.
	d.Language, d.Brand = app.language, app.mailBrand
	d.ExpiresIn = locale.Get(app.language).Duration(p.LinkExpiration)
	if p.Type == approval.TypeManager || p.NoCodeFallback {
		d.Code = "" // such a profile's mail carries none
	}
	subject, text, html, err := p.Templates.Render(d)
	if err != nil {
		return fmt.Errorf("profile %q: %w", profile, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	txtPath, htmlPath := filepath.Join(out, profile+".txt"), filepath.Join(out, profile+".html")
	if err := os.WriteFile(txtPath, []byte(text), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(htmlPath, []byte(html), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "profile:  %s (sample request; the link in it does not work)\n", profile)
	fmt.Fprintf(w, "subject:  %s\n", subject)
	fmt.Fprintf(w, "text:     %s\n", txtPath)
	fmt.Fprintf(w, "html:     %s\n", htmlPath)
	return nil
}
