package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var updateFixtures = flag.Bool("update", false, "rewrite the testdata fixtures from what the code produces now")

const exampleFixture = "testdata/Caddyfile.example.json"

// The JSON that Caddyfile.example adapts to is a contract with every
// operator who keeps their config as JSON, or diffs `caddy adapt` output
// across upgrades: a refactoring of the adapter or of the config types
// must not change it. Run `go test -run Fixture ./caddymodule -args -update` only for a change
// of the config format itself, and say so in the changelog.
func TestCaddyfileExampleAdaptsToTheFixture(t *testing.T) {
	out := adaptExample(t)
	got := indent(t, out)
	if *updateFixtures {
		if err := os.WriteFile(exampleFixture, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(exampleFixture)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Caddyfile.example no longer adapts to %s; diff the two:\n%s", exampleFixture, got)
	}
}

// The app's JSON config round-trips through the config types unchanged:
// no field is lost or renamed on the way in, which a JSON config (the one
// the Caddyfile adapts to, or an operator's own) would otherwise silently
// drop.
func TestExampleFixtureRoundTripsThroughTheConfigTypes(t *testing.T) {
	raw, err := os.ReadFile(exampleFixture)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			Mailauth json.RawMessage `json:"mailauth"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	var app App
	dec := json.NewDecoder(bytes.NewReader(cfg.Apps.Mailauth))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&app); err != nil {
		t.Fatalf("the fixture's mailauth app does not decode into App: %v", err)
	}
	back, err := json.Marshal(&app)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := indent(t, back), indent(t, cfg.Apps.Mailauth); !bytes.Equal(got, want) {
		t.Fatalf("App changes the JSON on the way through:\ngot  %s\nwant %s", got, want)
	}
}

// adaptExample is the JSON that Caddyfile.example adapts to.
func adaptExample(t *testing.T) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := adapt(t, string(src))
	if err != nil {
		t.Fatalf("Caddyfile.example does not adapt: %v", err)
	}
	return out
}

func indent(t *testing.T, raw []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}
