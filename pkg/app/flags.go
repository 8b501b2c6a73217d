package app

import (
	"strconv"
	"time"

	"github.com/spf13/pflag"
)

// optString is a string flag that remembers whether it was given, so that
// only given flags override the config file.
type optString struct {
	v   string
	set bool
}

func (o *optString) String() string { return o.v }
func (o *optString) Type() string   { return "string" }
func (o *optString) Set(s string) error {
	o.v, o.set = s, true
	return nil
}

// to overrides *dst when the flag was given.
func (o *optString) to(dst *string) {
	if o.set {
		*dst = o.v
	}
}

func stringFlag(f *pflag.FlagSet, dst *optString, name, def, usage string) {
	dst.v = def
	f.Var(dst, name, usage)
}

// optDuration is optString for durations.
type optDuration struct {
	v   time.Duration
	set bool
}

func (o *optDuration) String() string { return o.v.String() }
func (o *optDuration) Type() string   { return "duration" }
func (o *optDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	o.v, o.set = d, true
	return nil
}

func (o *optDuration) to(dst *time.Duration) {
	if o.set {
		*dst = o.v
	}
}

func durationFlag(f *pflag.FlagSet, dst *optDuration, name string, def time.Duration, usage string) {
	dst.v = def
	f.Var(dst, name, usage)
}

// optInt is optString for ints.
type optInt struct {
	v   int
	set bool
}

func (o *optInt) String() string { return strconv.Itoa(o.v) }
func (o *optInt) Type() string   { return "int" }
func (o *optInt) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, 0)
	if err != nil {
		return err
	}
	o.v, o.set = int(n), true
	return nil
}

func intFlag(f *pflag.FlagSet, dst *optInt, name string, def int, usage string) {
	dst.v = def
	f.Var(dst, name, usage)
}

// optBool is optString for booleans; the flag alone means true.
type optBool struct {
	v   bool
	set bool
}

func (o *optBool) String() string   { return strconv.FormatBool(o.v) }
func (o *optBool) Type() string     { return "bool" }
func (o *optBool) IsBoolFlag() bool { return true }
func (o *optBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	o.v, o.set = b, true
	return nil
}

func boolFlag(f *pflag.FlagSet, dst *optBool, name string, def bool, usage string) {
	dst.v = def
	f.VarPF(dst, name, "", usage).NoOptDefVal = "true"
}
