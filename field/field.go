// Package field has the one error type of bad input: which field (a config
// key, a flag, a struct field), the value given (never a secret), where it
// came from, and what the field allows. config, scripts, iam and handoff
// report every problem of their input as a *field.Error, so the command
// line can name the setting the user must fix, and tests can find the
// field whatever the package.
package field

import (
	"fmt"
	"unicode/utf8"
)

// Error reports one field whose value is not allowed.
type Error struct {
	Field  string // e.g. "aws.instance_type", "--key-pair-name", "Name"
	Value  string // the rejected value; "" for a secret, which is never shown
	Origin string // " (from $LATENTWORKER_REGION)" or " (from --region)"; "" when it goes without saying
	Rule   string // what the field allows
	Err    error  // the underlying error, if any
}

// Error reads `field = "value" (origin): rule`, the value cut to 80
// characters.
func (e *Error) Error() string {
	v := e.Value
	if utf8.RuneCountInString(v) > 80 {
		v = string([]rune(v)[:80]) + "..."
	}
	return fmt.Sprintf("%s = %q%s: %s", e.Field, v, e.Origin, e.Rule)
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// All returns every *Error in err's tree (errors.Join and wrapping), in
// order.
func All(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if fe, ok := e.(*Error); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}
