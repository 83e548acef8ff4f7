package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval"
	"github.com/mailauth/caddy-mailauth/keyring"
	"github.com/mailauth/caddy-mailauth/store"
)

func init() {
	mailauthSubcommands = append(mailauthSubcommands, auditCommand())
}

// verifyAudit checks the hash chain of the trail in the app's store, after
// storing what is queued.
func (a *App) verifyAudit(ctx context.Context) (*approval.ChainReport, error) {
	if err := a.syncAudit(ctx); err != nil {
		return nil, err
	}
	return approval.VerifyAuditChain(ctx, a.store, a.auditRetention(), time.Now())
}

// auditCheckpoint signs the head of the trail in the app's store, after
// storing what is queued.
func (a *App) auditCheckpoint(ctx context.Context) (*approval.Checkpoint, error) {
	if err := a.syncAudit(ctx); err != nil {
		return nil, err
	}
	return approval.MakeCheckpoint(ctx, a.store, a.keyring.Checkpoint[0], time.Now())
}

// verifyAuditSince checks the trail in the app's store against cp, after
// storing what is queued.
func (a *App) verifyAuditSince(ctx context.Context, cp *approval.Checkpoint) (*approval.ChainReport, error) {
	if err := a.syncAudit(ctx); err != nil {
		return nil, err
	}
	return approval.VerifyAuditChainSince(ctx, a.store, a.auditRetention(), time.Now(), cp, a.keyring.Checkpoint)
}

// syncAudit waits until the audit records queued so far are stored.
func (a *App) syncAudit(ctx context.Context) error {
	if a.trail == nil {
		return nil
	}
	return a.trail.Sync(ctx)
}

// loadCheckpointKeys derives the checkpoint keys for a command that opened
// the store itself, without writing to it: from session_keys, or from
// the key kept in the store.
func (a *App) loadCheckpointKeys(ctx context.Context) error {
	if len(a.SessionKeys) > 0 {
		_, err := a.keys(ctx)
		return err
	}
	key, err := a.store.Get(ctx, keyring.StoredKeyName)
	if errors.Is(err, store.ErrNotFound) {
		return errors.New("the store holds no session key (and the config sets no session_keys), so no checkpoint can have been made for it")
	}
	if err != nil {
		return fmt.Errorf("reading the session key from the store: %w", err)
	}
	a.keyring, err = keyring.Derive(key)
	return err
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
		Use:   "verify --config <file> [--since-checkpoint <file>] [--address <admin address>]",
		Short: "Check the stored audit trail's hash chain and say where it breaks",
		Long: `
verify walks the audit trail kept in the store from its oldest record to its
newest and checks that every record still matches its hash, names the hash
of the record before it, and that no number is missing. It prints the
head's record number and hash, reports each break with the record number
and exits non-zero if there is one.

With --since-checkpoint, it also checks the trail against a checkpoint
exported earlier (GET /mailauth/audit/checkpoint on the admin endpoint):
the checkpoint's signature must hold under the session key, the record it
names must still have its hash, and the trail must reach at least as far.
That catches records cut off the end and a stretch rewritten and rehashed,
which the chain alone cannot see.

It opens the store named in the config. An embedded (badger) store can be
opened by one process only, so while Caddy runs, verify asks the running
Caddy instead, through its admin endpoint (from the config, or --address).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfgFile, _ := c.Flags().GetString("config")
			adapter, _ := c.Flags().GetString("adapter")
			address, _ := c.Flags().GetString("address")
			cpFile, _ := c.Flags().GetString("since-checkpoint")
			ctx := c.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			var cp *approval.Checkpoint
			if cpFile != "" {
				var err error
				if cp, err = readCheckpoint(cpFile); err != nil {
					return err
				}
			}
			rep, source, err := verifyAuditChain(ctx, cfgFile, adapter, address, cp)
			if err != nil {
				return err
			}
			return printChainReport(c.OutOrStdout(), rep, source)
		},
	}
	verify.Flags().StringP("config", "c", "", "Configuration file (required)")
	verify.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (default: from the file name, caddyfile for a Caddyfile)")
	verify.Flags().String("address", "", "Admin endpoint of the running Caddy, when the store is in use (default: from the config)")
	verify.Flags().String("since-checkpoint", "", "A checkpoint exported from GET /mailauth/audit/checkpoint to check the trail against")
	audit.AddCommand(verify)
	return audit
}

// readCheckpoint reads a checkpoint file as the admin API exports it.
func readCheckpoint(file string) (*approval.Checkpoint, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the checkpoint: %w", err)
	}
	var cp approval.Checkpoint
	if err := json.Unmarshal(raw, &cp); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w: %v", file, approval.ErrNotACheckpoint, err)
	}
	return &cp, nil
}

// verifyAuditChain opens the store and verifies it, against cp when it is
// not nil, or asks the running Caddy when the store is locked by it.
// source says which.
func verifyAuditChain(ctx context.Context, cfgFile, adapter, address string, cp *approval.Checkpoint) (*approval.ChainReport, string, error) {
	app, err := loadApp(cfgFile, adapter)
	if err != nil {
		return nil, "", err
	}
	app.logger = zap.NewNop()
	openErr := app.openStore()
	if openErr == nil {
		defer app.Cleanup()
		if cp == nil {
			rep, err := app.verifyAudit(ctx)
			return rep, "store", err
		}
		if err := app.loadCheckpointKeys(ctx); err != nil {
			return nil, "", err
		}
		rep, err := app.verifyAuditSince(ctx, cp)
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
	method, body, header := http.MethodGet, io.Reader(nil), http.Header(nil)
	if cp != nil {
		raw, err := json.Marshal(cp)
		if err != nil {
			return nil, "", err
		}
		method, body, header = http.MethodPost, bytes.NewReader(raw), http.Header{"Content-Type": {"application/json"}}
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, "/mailauth/audit/verify", header, body)
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
	if rep.HeadHash != "" {
		fmt.Fprintf(w, "head: record %d, sha256 %s\n", rep.HeadSeq, rep.HeadHash)
	}
	if cc := rep.Checkpoint; cc != nil {
		fmt.Fprintf(w, "checkpoint: record %d, sha256 %s, made %s (key %s)\n", cc.Seq, cc.Hash, cc.Time.Format(time.RFC3339), cc.KeyID)
		switch {
		case cc.Expired:
			fmt.Fprintf(w, "the checkpoint's record (of %s) has expired by audit_retention, as it should: only truncation could be checked against it; verify against a newer checkpoint\n", cc.RecordTime.Format(time.RFC3339))
		case len(rep.Problems) == 0:
			fmt.Fprintln(w, "the trail still holds the checkpoint's record, and reaches past it")
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "BROKEN %s\n", p)
	}
	if len(rep.Problems) > 0 {
		return fmt.Errorf("the audit chain is broken in %d place(s)", len(rep.Problems))
	}
	if rep.Checkpoint != nil && !rep.Checkpoint.Expired {
		fmt.Fprintln(w, "chain intact since the checkpoint")
		return nil
	}
	fmt.Fprintln(w, "chain intact")
	return nil
}
