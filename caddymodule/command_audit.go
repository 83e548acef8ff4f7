package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
)

func init() {
	mailauthSubcommands = append(mailauthSubcommands, auditCommand())
}

// verifyAudit checks the hash chain of the trail in the app's store, after
// storing what is queued.
func (a *App) verifyAudit(ctx context.Context) (*approval.ChainReport, error) {
	if a.trail != nil {
		if err := a.trail.Sync(ctx); err != nil {
			return nil, err
		}
	}
	return approval.VerifyAuditChain(ctx, a.store, a.auditRetention(), time.Now())
}

func (a *App) auditRetention() time.Duration {
	if a.AuditRetention > 0 {
		return time.Duration(a.AuditRetention)
	}
	return approval.DefaultAuditRetention
}

// auditCommand is `caddy mailauth audit`.
func auditCommand() *cobra.Command {
	audit := &cobra.Command{
		Use:   "audit verify --config <file>",
		Short: "Work with the audit trail kept in the store",
	}
	verify := &cobra.Command{
		Use:   "verify --config <file> [--address <admin address>]",
		Short: "Check the stored audit trail's hash chain and say where it breaks",
		Long: `
verify walks the audit trail kept in the store from its oldest record to its
newest and checks that every record still matches its hash, names the hash
of the record before it, and that no number is missing. It reports each
break with the record number and exits non-zero if there is one.

It opens the store named in the config. An embedded (badger) store can be
opened by one process only, so while Caddy runs, verify asks the running
Caddy instead, through its admin endpoint (from the config, or --address).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfgFile, _ := c.Flags().GetString("config")
			adapter, _ := c.Flags().GetString("adapter")
			address, _ := c.Flags().GetString("address")
			ctx := c.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			rep, source, err := verifyAuditChain(ctx, cfgFile, adapter, address)
			if err != nil {
				return err
			}
			return printChainReport(c.OutOrStdout(), rep, source)
		},
	}
	verify.Flags().StringP("config", "c", "", "Configuration file (required)")
	verify.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (default: from the file name, caddyfile for a Caddyfile)")
	verify.Flags().String("address", "", "Admin endpoint of the running Caddy, when the store is in use (default: from the config)")
	audit.AddCommand(verify)
	return audit
}

// verifyAuditChain opens the store and verifies it, or asks the running
// Caddy when the store is locked by it. source says which.
func verifyAuditChain(ctx context.Context, cfgFile, adapter, address string) (*approval.ChainReport, string, error) {
	app, err := loadApp(cfgFile, adapter)
	if err != nil {
		return nil, "", err
	}
	app.logger = zap.NewNop()
	openErr := app.openStore()
	if openErr == nil {
		defer app.Cleanup()
		rep, err := app.verifyAudit(ctx)
		return rep, "store", err
	}
	if !strings.Contains(openErr.Error(), "lock") {
		return nil, "", openErr
	}
	cfgJSON, _, _, err := caddycmd.LoadConfig(cfgFile, adapter)
	if err != nil {
		return nil, "", err
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(address, cfgJSON, cfgFile, adapter)
	if err != nil {
		return nil, "", err
	}
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, "/mailauth/audit/verify", nil, nil)
	if err != nil {
		return nil, "", fmt.Errorf("the store is in use (%v), and asking the running Caddy at %s failed: %w", openErr, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, "", fmt.Errorf("the running Caddy at %s answered %s: %s", addr, resp.Status, strings.TrimSpace(string(body)))
	}
	var rep approval.ChainReport
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return nil, "", fmt.Errorf("reading the answer of the running Caddy at %s: %w", addr, err)
	}
	return &rep, "running Caddy at " + addr, nil
}

// printChainReport writes the report and returns an error, for the exit
// code, when the chain is broken.
func printChainReport(w io.Writer, rep *approval.ChainReport, source string) error {
	fmt.Fprintf(w, "audit trail (%s): ", source)
	if rep.Records == 0 {
		fmt.Fprintln(w, "no records")
	} else {
		fmt.Fprintf(w, "%d records, %d (%s) to %d (%s)\n", rep.Records, rep.First, rep.FirstTime.Format(time.RFC3339), rep.Last, rep.LastTime.Format(time.RFC3339))
		if rep.First > 1 {
			fmt.Fprintf(w, "records before %d have expired (audit_retention)\n", rep.First)
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "BROKEN %s\n", p)
	}
	if len(rep.Problems) > 0 {
		return fmt.Errorf("the audit chain is broken in %d place(s)", len(rep.Problems))
	}
	fmt.Fprintln(w, "chain intact")
	return nil
}
