package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Transition is a change the lab made to one of its resources, when it
// happened: an instance's new state ("pending", "running", "stopping",
// "stopped", "shutting-down", "terminated"), its sshd answering after a
// boot ("ssh-up"), an image becoming "available". A client measures how
// soon it noticed a change against these (State.Transitions).
type Transition struct {
	Resource string    `json:"resource"`
	Event    string    `json:"event"`
	At       time.Time `json:"at"`
}

// transitionLog appends transitions to a file, one JSON object a line.
type transitionLog struct {
	mu sync.Mutex
	f  *os.File
}

func openTransitions(path string) (*transitionLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("transition log: %w", err)
	}
	return &transitionLog{f: f}, nil
}

// add records a transition; a nil log records nothing.
func (t *transitionLog) add(resource, event string, at time.Time) {
	if t == nil {
		return
	}
	b, _ := json.Marshal(Transition{Resource: resource, Event: event, At: at.UTC()})
	t.mu.Lock()
	defer t.mu.Unlock()
	_, _ = t.f.Write(append(b, '\n'))
}

func (t *transitionLog) close() {
	if t != nil {
		_ = t.f.Close()
	}
}

// ReadTransitions reads a lab's transition log (State.Transitions).
func ReadTransitions(path string) ([]Transition, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Transition
	for dec := json.NewDecoder(f); ; {
		var tr Transition
		switch err := dec.Decode(&tr); {
		case errors.Is(err, io.EOF):
			return out, nil
		case err != nil:
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, tr)
	}
}
