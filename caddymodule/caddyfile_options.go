package caddymodule

import (
	"errors"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mailauth/caddy-mailauth/internal/caddyfilearg"
)

// An option reads the arguments after an option's name into the config
// being parsed. what names the option in errors, with its block, such as
// `profile "daily": server`. It checks only syntax (how many values, and
// that a number is a number); what the values mean is for the config
// type's Validate.
type option func(d *caddyfile.Dispenser, what string) error

// optionSpec is one row of a block's table of options.
type optionSpec struct {
	name string
	read option
	// many lets the option appear more than once, as named blocks do.
	many bool
}

// optionTable is the options of one block, in the order that errors list
// them.
type optionTable []optionSpec

// block describes a block for parseOptions: prefix starts its errors
// (`mail_server "m"`, "rate_limit"; empty for the mailauth block itself),
// and listOptions has an unknown option's error name the known ones.
type block struct {
	prefix      string
	options     optionTable
	listOptions bool
}

// parseOptions reads the block that opens after d's current token, each
// option through its table row. An unknown option and one set twice are
// errors at their line.
func parseOptions(d *caddyfile.Dispenser, b block) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		spec, ok := b.lookup(name)
		if !ok {
			return d.Err(b.unknown(name))
		}
		if seen[name] && !spec.many {
			return d.Errf("%s%s: set twice", b.lead(), name)
		}
		seen[name] = true
		if err := spec.read(d, b.lead()+name); err != nil {
			return err
		}
	}
	return nil
}

func (b block) lookup(name string) (optionSpec, bool) {
	for _, s := range b.options {
		if s.name == name {
			return s, true
		}
	}
	return optionSpec{}, false
}

// lead is what comes before an option's name in an error.
func (b block) lead() string {
	if b.prefix == "" {
		return ""
	}
	return b.prefix + ": "
}

func (b block) unknown(name string) string {
	if b.prefix == "" {
		return "unknown mailauth option " + strconv.Quote(name)
	}
	msg := b.prefix + ": unknown option " + strconv.Quote(name)
	if b.listOptions {
		names := make([]string, len(b.options))
		for i, s := range b.options {
			names[i] = s.name
		}
		msg += " (" + strings.Join(names, ", ") + ")"
	}
	return msg
}

// stringArg reads an option's one value.
func stringArg(dst *string) option {
	return func(d *caddyfile.Dispenser, what string) error {
		if !d.NextArg() || d.CountRemainingArgs() > 0 {
			return d.Errf("%s: want one value", what)
		}
		*dst = d.Val()
		return nil
	}
}

// listArg reads an option's values, of which there must be one at least;
// noun says what they are in the error.
func listArg(dst *[]string, noun string) option {
	return func(d *caddyfile.Dispenser, what string) error {
		*dst = d.RemainingArgs()
		if len(*dst) == 0 {
			return d.Errf("%s: name at least one%s", what, noun)
		}
		return nil
	}
}

// positiveArg reads an option's one whole number, above zero: zero is
// what JSON leaves out for the default, so writing it is a mistake. noun
// says what the value should have been.
func positiveArg(dst *int, noun string) option {
	return func(d *caddyfile.Dispenser, what string) error {
		if !d.NextArg() || d.CountRemainingArgs() > 0 {
			return d.Errf("%s: want one value", what)
		}
		n, err := strconv.Atoi(d.Val())
		if err != nil || n < 1 {
			return d.Errf("%s: %q is not %s", what, d.Val(), noun)
		}
		*dst = n
		return nil
	}
}

// durationArg reads an option's one positive duration.
var durationArg = caddyfilearg.Duration

// durationOption is durationArg into dst.
func durationOption(dst *caddy.Duration) option {
	return func(d *caddyfile.Dispenser, what string) error {
		dur, err := durationArg(d, what)
		*dst = dur
		return err
	}
}

// flagArg sets an option that takes no value.
func flagArg(dst *bool) option {
	return func(d *caddyfile.Dispenser, what string) error {
		if d.NextArg() {
			return d.Errf("%s: takes no value", what)
		}
		*dst = true
		return nil
	}
}

// offArg reads on or off into a field that says the feature is off, as
// the JSON's disable_* fields do.
func offArg(off *bool) option {
	return func(d *caddyfile.Dispenser, what string) error {
		if !d.NextArg() || d.CountRemainingArgs() > 0 || (d.Val() != "on" && d.Val() != "off") {
			return d.Errf("%s: want on or off", what)
		}
		*off = d.Val() == "off"
		return nil
	}
}

// fieldAt is where field is set in the block that opens after the
// current token of at, or the block's closing brace when it is not set,
// which is where an error about a missing field points.
func fieldAt(at caddyfile.Dispenser, field string) caddyfile.Dispenser {
	for nesting := at.Nesting(); at.NextBlock(nesting); {
		if at.Val() == field {
			return at
		}
		at.RemainingArgs()
		for inner := at.Nesting(); at.NextBlock(inner); {
		}
	}
	return at
}

// blockAt finds `<kind> <name> … {` among the options of the block that
// opens after the current token of at, with at left on its last argument;
// an empty name finds the first block of that kind.
func blockAt(at caddyfile.Dispenser, kind, name string) (caddyfile.Dispenser, bool) {
	for nesting := at.Nesting(); at.NextBlock(nesting); {
		opt := at.Val()
		args := at.RemainingArgs()
		if opt == kind && (name == "" || (len(args) > 0 && args[0] == name)) {
			return at, true
		}
		for inner := at.Nesting(); at.NextBlock(inner); {
		}
	}
	return at, false
}

// errorAt gives err the line of the field it names: at is on the token
// before the block (its name, or the option that opens it), and err has
// been found by that block's Validate. Other errors point at the block's
// end.
func errorAt(at caddyfile.Dispenser, err error) error {
	if err == nil {
		return nil
	}
	field := ""
	if fe, ok := errors.AsType[*FieldError](err); ok && !fe.atEnd {
		field = fe.Field
	}
	line := fieldAt(at, field)
	return line.WrapErr(err)
}

// appErrorAt gives an error of the whole app's validation the line of the
// field it names, at being on the mailauth option.
func appErrorAt(at caddyfile.Dispenser, err error) error {
	fe, ok := errors.AsType[*FieldError](err)
	if !ok || fe.Block == "" {
		return errorAt(at, err)
	}
	b, found := blockAt(at, fe.Block, fe.Name)
	if !found {
		return errorAt(at, err)
	}
	return errorAt(b, err)
}
