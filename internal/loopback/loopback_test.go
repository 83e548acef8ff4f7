package loopback

import "testing"

func TestHostIsLoopbackOnlyByItsLiteral(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"LocalHost", true},
		{"localhost.", true},
		{"home.localhost", true},
		{"a.b.LOCALHOST", true},
		{"127.0.0.1", true},
		{"127.8.9.10", true},
		{"::1", true},
		{"::ffff:127.0.0.1", true},
		{"", false},
		{".localhost", false},
		{"localhost.example.com", false},
		{"mylocalhost", false},
		{"evil-localhost", false},
		{"localhost.evil", false},
		{"10.0.0.25", false},
		{"0.0.0.0", false},
		{"::", false},
		{"127.1", false}, // not an address literal Go parses; never resolved
		{"[::1]", false}, // brackets belong to URLs, not to hosts
		{"apps.example.com", false},
	} {
		if got := Host(tc.host); got != tc.want {
			t.Errorf("Host(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}
