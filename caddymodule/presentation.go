package caddymodule

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/mailauth/caddy-mailauth/approval/mailtemplate"
	"github.com/mailauth/caddy-mailauth/locale"
)

// defaultLanguageAttribute is the directory attribute of a user's own
// language when the config names none (inetOrgPerson's).
const defaultLanguageAttribute = "preferredLanguage"

// mailTemplateNames are the mail templates that the templates directory
// may replace, under mail/.
var mailTemplateNames = []string{
	"subject.txt", "body.txt", "body.html",
	"manager_subject.txt", "manager_body.txt", "manager_body.html",
	"notice_subject.txt", "notice_body.txt", "notice_body.html",
}

func (a *App) languageAttribute() string {
	if a.LanguageAttribute != "" {
		return a.LanguageAttribute
	}
	return defaultLanguageAttribute
}

// buildPresentation checks and builds what pages and mails look like:
// the brand, the languages and the operator's templates.
func (a *App) buildPresentation() error {
	a.language = locale.Default
	if a.DefaultLanguage != "" {
		if a.language = locale.Normalize(a.DefaultLanguage); a.language == "" {
			return fmt.Errorf("mailauth: default_language: %q has no message catalogue (have: %s)", a.DefaultLanguage, strings.Join(locale.Languages(), ", "))
		}
	}
	if strings.ContainsAny(a.LanguageAttribute, " \t\r\n,()") {
		return fmt.Errorf("mailauth: language_attribute: %q is not an attribute name", a.LanguageAttribute)
	}
	if err := a.buildBrand(); err != nil {
		return err
	}
	a.pages, a.mailOverrides, a.notice = defaultPages, nil, nil
	if a.Templates == "" {
		return nil
	}
	dir := a.Templates
	fail := func(name string, err error) error {
		return fmt.Errorf("mailauth: templates: %s: %v", filepath.Join(dir, name), err)
	}
	pages, mails, err := loadTemplateDir(dir)
	if err != nil {
		return fmt.Errorf("mailauth: templates: %w", err)
	}
	if a.pages, err = parsePages(pages); err != nil {
		return fmt.Errorf("mailauth: templates: %s/%w", strings.TrimRight(dir, "/"), err)
	}
	// Each mail file is tried on its own, with the built-in text for the
	// other parts, so the error names the file at fault.
	kinds := map[string]func(subject, text, html string) (*mailtemplate.Templates, error){
		"": mailtemplate.Parse, "manager_": mailtemplate.ParseManager, "notice_": mailtemplate.ParseNotice,
	}
	for kind, parse := range kinds {
		for i, part := range []string{"subject.txt", "body.txt", "body.html"} {
			src, ok := mails[kind+part]
			if !ok {
				continue
			}
			args := [3]string{}
			args[i] = src
			if _, err := parse(args[0], args[1], args[2]); err != nil {
				return fail(filepath.Join("mail", kind+part), err)
			}
		}
	}
	a.mailOverrides = mails
	if a.notice, err = mailtemplate.ParseNotice(mails["notice_subject.txt"], mails["notice_body.txt"], mails["notice_body.html"]); err != nil {
		return fail("mail/notice_*", err)
	}
	return nil
}
