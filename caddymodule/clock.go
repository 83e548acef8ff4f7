//go:build !mailauth_testclock

package caddymodule

import "time"

// now is the clock the approval service runs on. Test builds (tag
// mailauth_testclock) replace it with one an admin endpoint can move, so
// integration tests can let an hour pass; release builds have no such
// endpoint.
var now = time.Now
