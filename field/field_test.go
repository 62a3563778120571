package field

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestErrorAndAll(t *testing.T) {
	inner := &Error{Field: "Name", Value: "-w", Rule: "must start with a letter"}
	outer := &Error{Field: "worker.name", Value: "-w", Origin: " (from --worker-name)", Rule: inner.Rule, Err: inner}
	other := &Error{Field: "aws.region", Value: strings.Repeat("x", 100), Rule: "must be a region"}
	err := fmt.Errorf("config: %w", errors.Join(outer, errors.New("plain"), other))
	if got, want := outer.Error(), `worker.name = "-w" (from --worker-name): must start with a letter`; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	if !strings.HasSuffix(other.Error(), `...": must be a region`) {
		t.Errorf("a long value is not cut: %q", other.Error())
	}
	all := All(err)
	if len(all) != 2 || all[0] != outer || all[1] != other {
		t.Errorf("All = %v; want the two top-level field errors", all)
	}
	if got := All(all[0].Err); len(got) != 1 || got[0] != inner {
		t.Errorf("All(inner) = %v; want the wrapped Worker field", got)
	}
	if !errors.Is(err, inner) {
		t.Errorf("errors.Is(err, inner) = false; Unwrap should reach it")
	}
}
