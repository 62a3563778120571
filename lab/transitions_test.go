package lab

import (
	"path/filepath"
	"testing"
	"time"
)

// TestTransitionsRoundTrip: what the lab records is what ReadTransitions
// gives back, in order.
func TestTransitionsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "transitions.log")
	l, err := openTransitions(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	l.add("i-1", "pending", at)
	l.add("i-1", "ssh-up", at.Add(time.Second))
	l.add("ami-1", "available", at.Add(2*time.Second))
	l.close()
	got, err := ReadTransitions(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Transition{{"i-1", "pending", at}, {"i-1", "ssh-up", at.Add(time.Second)}, {"ami-1", "available", at.Add(2 * time.Second)}}
	if len(got) != len(want) {
		t.Fatalf("read %v; want %v", got, want)
	}
	for i := range want {
		if got[i].Resource != want[i].Resource || got[i].Event != want[i].Event || !got[i].At.Equal(want[i].At) {
			t.Errorf("transition %d = %+v; want %+v", i, got[i], want[i])
		}
	}
}
