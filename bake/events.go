package bake

import "time"

// EventType names an Event.
type EventType string

// Event types.
const (
	EventStepStarted  EventType = "step_started"
	EventStepFinished EventType = "step_finished" // Err set when the step failed
	EventProgress     EventType = "progress"      // Percent is -1 when unknown
	EventWarning      EventType = "warning"
	EventLeftover     EventType = "leftover" // Leftover set
	EventCreated      EventType = "created"  // Resource set: the run created it (its undo is pushed)
	EventUndo         EventType = "undo"     // Resource set: the run removed it again
)

// Event is one thing a run reports. It never carries a secret.
type Event struct {
	Type EventType `json:"type"`
	// Worker is the worker the run bakes, so that the events of several
	// runs at once can be told apart.
	Worker   string        `json:"worker,omitempty"`
	Step     string        `json:"step,omitempty"`
	Elapsed  time.Duration `json:"elapsed_ns,omitempty"`
	Percent  int           `json:"percent,omitempty"`
	Message  string        `json:"message,omitempty"`
	Err      string        `json:"error,omitempty"`
	Leftover *Leftover     `json:"leftover,omitempty"`
	Resource *Leftover     `json:"resource,omitempty"` // created/undo: the resource and the command that removes it
}

// Events receives a run's events, in order, from the goroutine that called
// Run. The CLI renders them as text on stderr or as JSON lines.
type Events interface {
	Event(Event)
}

// EventsFunc adapts a function to Events.
type EventsFunc func(Event)

// Event calls f.
func (f EventsFunc) Event(e Event) { f(e) }
