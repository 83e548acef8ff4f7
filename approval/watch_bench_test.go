package approval

import (
	"context"
	"testing"

	"go.uber.org/zap"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/directory"
	"github.com/mailauth/caddy-mailauth/store"
)

// BenchmarkWatch is what one status poll of a waiting page costs the
// service: the store read of the login, the check of the pending secret
// and the view. A waiting browser used to do it every second or two; with
// long polls it does it once per answer.
func BenchmarkWatch(b *testing.B) {
	for _, bc := range []struct{ name, input string }{
		// A known user's login carries the user's name, address and
		// manager as well; an unknown user's only what was typed.
		{"known", aliceInput},
		{"unknown", "nobody"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			svc, site, pending := watchedLoginFor(b, bc.input)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				v, err := svc.Watch(ctx, site, pending)
				if err != nil || v.State != StatePending {
					b.Fatalf("Watch: %+v, %v", v, err)
				}
			}
		})
	}
}

// watchedLoginFor returns a service on an in-memory store with one pending
// login for input on a one-profile site, dispatched, the site and the
// login's pending cookie.
func watchedLoginFor(b *testing.B, input string) (*Service, *Site, string) {
	b.Helper()
	st, err := store.OpenBadger(store.BadgerOptions{InMemory: true}, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	dir, err := directory.NewLocal("staff", []directory.LocalUser{{Username: "alice", Name: "Alice Example", Email: aliceEmail, Sponsor: "bob@example.com"}})
	if err != nil {
		b.Fatal(err)
	}
	tpl, err := mailtemplate.Parse("", "", "")
	if err != nil {
		b.Fatal(err)
	}
	codec, err := NewSessionCodec(testKey(1))
	if err != nil {
		b.Fatal(err)
	}
	p := &Profile{Name: testProfile, Type: TypeUser, Server: testServer, LinkExpiration: testLinkLife, MailServers: []string{"primary"}, Directories: []directory.Directory{dir}, Templates: tpl}
	svc, err := NewService(Config{Store: st, Mail: &fakeMailQueue{}, Profiles: map[string]*Profile{p.Name: p}, Codec: codec, CodeKey: testKey(2), SessionLifetime: testLifetime})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(svc.Close)
	site := NewSite(p, nil)
	started, err := svc.Start(context.Background(), StartRequest{Site: site, Input: input, ReturnURL: "/reports?q=1", App: testApp, ClientIP: testIP, UserAgent: testUA})
	if err != nil {
		b.Fatal(err)
	}
	svc.Wait()
	return svc, site, started.Pending
}
