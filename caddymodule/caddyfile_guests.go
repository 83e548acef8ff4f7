package caddymodule

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// parseDirectory reads `directory <name> <type> { … }`: the module that
// the type names parses the whole of it, with the keyword and the name,
// which its errors name.
func parseDirectory(d *caddyfile.Dispenser, existing map[string]json.RawMessage) (string, json.RawMessage, error) {
	known := moduleTypes(directoriesNamespace, shippedDirectories)
	if !d.NextArg() {
		return "", nil, d.Errf("directory: want a name and a type (%s)", strings.Join(known, " or "))
	}
	name := d.Val()
	if _, dup := existing[name]; dup {
		return "", nil, d.Errf("directory %q: defined twice", name)
	}
	if !d.NextArg() {
		return "", nil, d.Errf("directory %q: want a type (%s)", name, strings.Join(known, " or "))
	}
	kind := d.Val()
	if d.NextArg() {
		return "", nil, d.Errf("directory %q: unexpected %q", name, d.Val())
	}
	if !slices.Contains(known, kind) {
		return "", nil, d.Errf("directory %q: type %q is not supported (%s)", name, kind, strings.Join(known, " or "))
	}
	d.Prev() // the name
	d.Prev() // the keyword
	raw, err := unmarshalGuest(d, directoriesNamespace, "type", kind)
	return name, raw, err
}

// parseStore reads `store <backend> …`, which the backend's module
// parses, with the keyword.
func parseStore(d *caddyfile.Dispenser) (json.RawMessage, error) {
	if n := d.CountRemainingArgs(); n == 0 || n > 2 {
		return nil, d.Errf("store: want 'store badger [<dir>]' or 'store redis <url> { … }'")
	}
	d.NextArg()
	backend := d.Val()
	if known := moduleTypes(storesNamespace, shippedStores); !slices.Contains(known, backend) {
		return nil, d.Errf("store: backend %q is not supported (%s)", backend, strings.Join(known, ", "))
	}
	d.Prev() // the keyword
	return unmarshalGuest(d, storesNamespace, "backend", backend)
}

// unmarshalGuest has the module namespace.name parse the directive at d
// and returns its JSON, with key naming the module first, as the config
// types wrote it before directories and stores were modules.
func unmarshalGuest(d *caddyfile.Dispenser, namespace, key, name string) (json.RawMessage, error) {
	info, err := caddy.GetModule(namespace + "." + name)
	if err != nil {
		return nil, d.Err(err.Error())
	}
	mod := info.New()
	unm, ok := mod.(caddyfile.Unmarshaler)
	if !ok {
		return nil, d.Errf("module %s cannot be configured in a Caddyfile; use JSON", info.ID)
	}
	if err := unm.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
		return nil, err
	}
	body, err := json.Marshal(mod)
	if err != nil {
		return nil, d.Errf("%s: %v", info.ID, err)
	}
	head, _ := json.Marshal(map[string]string{key: name})
	if string(body) == "{}" {
		return head, nil
	}
	return append(append(head[:len(head)-1], ','), body[1:]...), nil
}
