package mailtemplate

import _ "embed"

// The built-in mails of Manager Approval and the failed-login notice.
var (
	//go:embed templates/manager_subject.txt
	managerSubject string
	//go:embed templates/manager_body.txt
	managerText string
	//go:embed templates/manager_body.html
	managerHTML string
	//go:embed templates/notice_subject.txt
	noticeSubject string
	//go:embed templates/notice_body.txt
	noticeText string
	//go:embed templates/notice_body.html
	noticeHTML string
)

// ParseManager is Parse with the Manager Approval mail as
// the default: it asks the approver to decide and carries .Link (approve)
// and .DenyLink.
func ParseManager(subject, text, html string) (*Templates, error) {
	return Parse(or(subject, managerSubject), or(text, managerText), or(html, managerHTML))
}

// Notice parses the failed-login notice that a manager gets when a
// login is denied, expires undecided or is rate limited.
func Notice() (*Templates, error) {
	return Parse(noticeSubject, noticeText, noticeHTML)
}

// ParseNotice is Parse with the failed-login notice as
// the default.
func ParseNotice(subject, text, html string) (*Templates, error) {
	return Parse(or(subject, noticeSubject), or(text, noticeText), or(html, noticeHTML))
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
