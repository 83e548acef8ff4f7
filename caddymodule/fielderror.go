package caddymodule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailauth/caddy-mailauth/mailer"
)

// FieldError is a mistake in one field of the mailauth app's config. The
// config types' Validate methods return it, so that a JSON config and a
// Caddyfile are refused with the same words, and so that the Caddyfile
// adapter can point at the line where the field was set.
type FieldError struct {
	// Block is the kind of block the field is in, such as "profile",
	// "mail_server", "policy" or "rate_limit"; empty for an option of the
	// app itself, such as session_lifetime.
	Block string
	// Name is the block's name (the key it has in the app's map); empty
	// for a block that has none, such as rate_limit.
	Name string
	// Field is the option at fault, as the Caddyfile and JSON spell it.
	Field string
	// Reason says what is wrong with it.
	Reason string

	// atEnd has the Caddyfile point at the end of the block rather than
	// at the field, for a mistake in how fields go together.
	atEnd bool
}

// Error reads like `profile "daily": server: required`.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Block != "" {
		b.WriteString(e.Block)
		if e.Name != "" {
			b.WriteString(" " + strconv.Quote(e.Name))
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// fieldErr makes a *FieldError, its reason formatted.
func fieldErr(block, field, format string, args ...any) *FieldError {
	return &FieldError{Block: block, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// named puts name into err when err is a *FieldError: the config types are
// kept in maps and do not know the names their blocks have.
func named(err error, name string) error {
	if fe, ok := errors.AsType[*FieldError](err); ok {
		fe.Name = name
	}
	return err
}

// fromConfigError turns the mailer's report on a server's field into a
// *FieldError of the mail_server block; other errors pass unchanged.
func fromConfigError(err error, name string) error {
	if ce, ok := errors.AsType[*mailer.ConfigError](err); ok {
		return &FieldError{Block: "mail_server", Name: name, Field: ce.Field, Reason: ce.Reason}
	}
	return err
}
