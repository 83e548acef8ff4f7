// Command caddy is Caddy with its standard modules and caddy-mailauth, for
// tests, the demo and operators who do not use xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/mailauth/caddy-mailauth/caddymodule"
)

func main() {
	caddycmd.Main()
}
