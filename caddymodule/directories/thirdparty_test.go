package directories_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/mailauth/caddy-mailauth/caddymodule"
	"github.com/mailauth/caddy-mailauth/caddymodule/directories"
	"github.com/mailauth/caddy-mailauth/directory"
)

// roster is a directory a third party might write: it registers itself
// in mailauth.directories and nothing else in caddy-mailauth changes.
type roster struct {
	Users map[string]string `json:"users,omitempty"`
}

func (roster) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "mailauth.directories.roster", New: func() caddy.Module { return new(roster) }}
}

func (r *roster) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()    // directory
	d.NextArg() // its name
	d.NextArg() // roster
	r.Users = map[string]string{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		args := append([]string{d.Val()}, d.RemainingArgs()...)
		if len(args) != 2 {
			return d.Err("want <username> <email>")
		}
		r.Users[args[0]] = args[1]
	}
	return nil
}

func (r *roster) Directory(name string, _ directories.Env) (directory.Directory, error) {
	var users []directory.LocalUser
	for u, e := range r.Users {
		users = append(users, directory.LocalUser{Username: u, Email: e})
	}
	return directory.NewLocal(name, users)
}

func init() { caddy.RegisterModule(roster{}) }

func caddyfileWith(dir, store string) string {
	return "{\n\tmailauth {\n\t\tstore badger " + store + "\n" +
		"\t\tmail_server m {\n\t\t\thost 127.0.0.1\n\t\t\tport 1025\n\t\t\ttls none\n\t\t\tfrom gw@example.test\n\t\t}\n" +
		dir +
		"\t\tprofile daily {\n\t\t\tserver https://apps.example.test\n\t\t\tfallback hr\n\t\t}\n\t}\n}\n\n" +
		"http://:8080 {\n\tmailauth {\n\t\tdefault_profile daily\n\t}\n\trespond ok\n}\n"
}

func TestAThirdPartyDirectoryModuleIsConfiguredAndLoadedLikeAShippedOne(t *testing.T) {
	src := caddyfileWith("\t\tdirectory hr roster {\n\t\t\tdana dana@example.test\n\t\t}\n", filepath.ToSlash(t.TempDir()))
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("a directory of a registered third-party type does not adapt: %v", err)
	}
	if !strings.Contains(string(out), `"hr":{"type":"roster","users":{"dana":"dana@example.test"}}`) {
		t.Fatalf("the roster directory's JSON is not its module's config under type roster:\n%s", out)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("a config with a third-party directory does not load: %v", err)
	}
}

func TestAnUnknownDirectoryTypeListsTheRegisteredOnes(t *testing.T) {
	src := caddyfileWith("\t\tdirectory hr scim {\n\t\t}\n", filepath.ToSlash(t.TempDir()))
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err == nil || !strings.Contains(err.Error(), `directory "hr": type "scim" is not supported (local or ldap or roster)`) {
		t.Fatalf("an unknown directory type: error = %v, want one listing the shipped types and then roster", err)
	}
}
