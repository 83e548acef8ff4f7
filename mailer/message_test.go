package mailer

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// An escalation queued by a version before Tag comes due after the
// upgrade: it must still reach the hook as the tag the sender now writes.
func TestMessagesQueuedBeforeTagsReadWithTheirTag(t *testing.T) {
	old := `{"id":"m1","servers":["a"],"to":"mgr@example.test","subject":"s","text":"t","html":"h",` +
		`"expires_at":"2030-01-02T03:04:05Z","reference":"K7Q-2ZP","not_before":"2030-01-02T03:00:00Z",` +
		`"login_id":"L1","purpose":"escalation"}`
	var m Message
	if err := json.Unmarshal([]byte(old), &m); err != nil {
		t.Fatal(err)
	}
	if m.Tag != "escalation/L1" || m.ID != "m1" || m.To != "mgr@example.test" || m.Reference != "K7Q-2ZP" ||
		!m.NotBefore.Equal(time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)) || len(m.Servers) != 1 {
		t.Fatalf("old message read as %+v", m)
	}
	raw, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "login_id") || strings.Contains(string(raw), `"purpose"`) || !strings.Contains(string(raw), `"tag":"escalation/L1"`) {
		t.Fatalf("written again as %s; want the tag and not the old fields", raw)
	}
	var again Message
	if err := json.Unmarshal(raw, &again); err != nil || again.Tag != m.Tag {
		t.Fatalf("the tag does not survive a round trip: %+v, %v", again, err)
	}
	var plain Message
	if err := json.Unmarshal([]byte(`{"id":"m2","notice":true}`), &plain); err != nil || plain.Tag != "" || !plain.Notice {
		t.Fatalf("an untagged message reads as %+v, %v", plain, err)
	}
}
