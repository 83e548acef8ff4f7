package mailtemplate

import (
	"strings"
	"testing"
)

func TestManagerMailCarriesBothDecisionLinksAndWhoAsks(t *testing.T) {
	tpl, err := ParseManager("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	d := sampleData()
	subject, text, html, err := tpl.Render(d)
	if err != nil {
		t.Fatal(err)
	}
	if subject != "Approve sign-in: Alice Example to apps.example.com?" {
		t.Errorf("subject = %q", subject)
	}
	for _, part := range []string{text, html} {
		for _, want := range []string{d.Link, d.DenyLink, "alice@example.com", "203.0.113.7", "Firefox on Windows", "REF-SAMPLE"} {
			if !strings.Contains(part, want) {
				t.Errorf("manager mail lacks %q:\n%s", want, part)
			}
		}
	}
}

func TestNoticeSaysOutcomeAndGroupsRepeats(t *testing.T) {
	tpl, err := Notice()
	if err != nil {
		t.Fatal(err)
	}
	subject, text, html, err := tpl.Render(sampleData())
	if err != nil {
		t.Fatal(err)
	}
	if subject != "Sign-in denied: Alice Example to apps.example.com" {
		t.Errorf("subject = %q", subject)
	}
	for _, part := range []string{text, html} {
		if !strings.Contains(part, "2 more failed sign-ins") || !strings.Contains(part, "was denied") {
			t.Errorf("notice should say the outcome and the grouped repeats:\n%s", part)
		}
		if strings.Contains(part, "verify?token") {
			t.Errorf("a notice must carry no link:\n%s", part)
		}
	}
}
