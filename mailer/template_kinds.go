package mailer

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

// ParseManagerTemplates is ParseTemplates with the Manager Approval mail as
// the default: it asks the approver to decide and carries .Link (approve)
// and .DenyLink.
func ParseManagerTemplates(subject, text, html string) (*Templates, error) {
	return ParseTemplates(or(subject, managerSubject), or(text, managerText), or(html, managerHTML))
}

// NoticeTemplates parses the failed-login notice that a manager gets when a
// login is denied, expires undecided or is rate limited.
func NoticeTemplates() (*Templates, error) {
	return ParseTemplates(noticeSubject, noticeText, noticeHTML)
}

// ParseNoticeTemplates is ParseTemplates with the failed-login notice as
// the default.
func ParseNoticeTemplates(subject, text, html string) (*Templates, error) {
	return ParseTemplates(or(subject, noticeSubject), or(text, noticeText), or(html, noticeHTML))
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
