package bake

import (
	"context"

	"fmt"
	"strings"
	"time"
)

// Kind classifies a resource on the undo stack, which decides whether it is
// removed when a run ends.
type Kind string

// Kinds of resources a run creates.
const (
	KindTemp    Kind = "temporary" // always removed
	KindBuilder Kind = "builder"   // removed on failure (unless KeepOnFailure) or with TerminateBuilder
	KindImage   Kind = "image"     // removed only on failure or cancel
)

// Leftover is a resource a run did not remove: its undo failed, or it was
// kept on purpose (Kept).
type Leftover struct {
	Resource string `json:"resource"` // e.g. "instance", "key pair"
	ID       string `json:"id"`       // the AWS ID, e.g. "i-0123..."
	Command  string `json:"command"`  // the command that removes it
	Kept     bool   `json:"kept"`     // kept on purpose, not an undo failure
	Err      error  `json:"-"`        // why undo failed; nil when Kept
}

func (l Leftover) String() string {
	s := l.Resource + " " + l.ID
	if l.Kept {
		s += " (kept)"
	} else if l.Err != nil {
		s += ": " + l.Err.Error()
	}
	return s + "; remove with: " + l.Command
}

// LeftoverError reports resources that undo could not remove. Its message
// names each one's ID and the command that removes it.
type LeftoverError struct {
	Leftovers []Leftover
}

func (e *LeftoverError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d resource(s) left behind:", len(e.Leftovers))
	for _, l := range e.Leftovers {
		b.WriteString("\n  " + l.String())
	}
	return b.String()
}

// Unwrap returns the undo errors.
func (e *LeftoverError) Unwrap() []error {
	var errs []error
	for _, l := range e.Leftovers {
		if l.Err != nil {
			errs = append(errs, l.Err)
		}
	}
	return errs
}

// undoItem removes one resource.
type undoItem struct {
	kind     Kind
	resource string
	id       string
	command  string
	fn       func(context.Context) error
	done     bool
	// kept: never undone, whatever the run's outcome (an image that is
	// available and verified).
	kept bool
}

// undoStack holds the undo of every resource a run created, newest last.
type undoStack struct {
	items []*undoItem
	// notify, when set, hears of every push (EventCreated) and every
	// successful undo (EventUndo).
	notify func(Event)
}

func (s *undoStack) tell(t EventType, it *undoItem) {
	if s.notify != nil {
		s.notify(Event{Type: t, Resource: &Leftover{Resource: it.resource, ID: it.id, Command: it.command}})
	}
}

// push records the undo of a resource; call it right after AWS returns id.
func (s *undoStack) push(kind Kind, resource, id, command string, fn func(context.Context) error) *undoItem {
	it := &undoItem{kind: kind, resource: resource, id: id, command: command, fn: fn}
	s.items = append(s.items, it)
	s.tell(EventCreated, it)
	return it
}

// keepID marks the items of resource id as never to be undone: unwind
// reports them as kept.
func (s *undoStack) keepID(id string) {
	for _, it := range s.items {
		if it.id == id {
			it.kept = true
		}
	}
}

// runNow undoes it at once (a step removing what it no longer needs) and
// takes it off the stack when that succeeds.
func (s *undoStack) runNow(ctx context.Context, it *undoItem) error {
	if it.done {
		return nil
	}
	if err := it.fn(ctx); err != nil {
		return err
	}
	it.done = true
	s.tell(EventUndo, it)
	return nil
}

// pending returns the items not yet undone, newest first.
func (s *undoStack) pending() []*undoItem {
	var out []*undoItem
	for i := len(s.items) - 1; i >= 0; i-- {
		if !s.items[i].done {
			out = append(out, s.items[i])
		}
	}
	return out
}

// unwind pops the stack in reverse, on a context detached from ctx's
// cancellation and bounded by timeout. keep says which items to leave in
// place (reported as kept), besides those marked with keepID. It continues past failures and returns every
// item it did not remove, failures first in undo order, and a
// *LeftoverError when any undo failed. Each item is undone at most once.
func (s *undoStack) unwind(ctx context.Context, timeout time.Duration, keep func(Kind) bool) ([]Leftover, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var failed, kept []Leftover
	for _, it := range s.pending() {
		l := Leftover{Resource: it.resource, ID: it.id, Command: it.command}
		if it.kept || keep != nil && keep(it.kind) {
			l.Kept = true
			kept = append(kept, l)
			continue
		}
		if err := it.fn(ctx); err != nil {
			l.Err = fmt.Errorf("removing %s %s: %w", it.resource, it.id, err)
			failed = append(failed, l)
			continue
		}
		it.done = true
		s.tell(EventUndo, it)
	}
	all := append(failed, kept...)
	if len(failed) > 0 {
		return all, &LeftoverError{Leftovers: failed}
	}
	return all, nil
}

// errString is the message of err, or "".
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
