package daemon

import "testing"

// Two ports asked for in a row must differ even when the kernel offers the
// same one twice, or a test's site and admin endpoint end up on one port.
func TestFreePortNeverRepeatsAPort(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
	}
}
