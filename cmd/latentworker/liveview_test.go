package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/latentworker/latentworker/bake"
)

// clock is a fake time the tests move.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func feed(m tea.Model, c *clock, key string, es ...bake.Event) tea.Model {
	for _, e := range es {
		m, _ = m.Update(eventMsg{key: key, e: e, at: c.now()})
	}
	return m
}

func TestLiveModelBlock(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	var m tea.Model = newLiveModel(c.now)
	m = feed(m, c, "w1",
		bake.Event{Type: bake.EventStepStarted, Step: "preflight"},
		bake.Event{Type: bake.EventStepFinished, Step: "preflight", Elapsed: 420 * time.Millisecond},
		bake.Event{Type: bake.EventStepStarted, Step: "launch builder"},
		bake.Event{Type: bake.EventStepFinished, Step: "launch builder", Elapsed: 75 * time.Second},
		bake.Event{Type: bake.EventStepStarted, Step: "provision"},
		bake.Event{Type: bake.EventProgress, Step: "provision", Percent: -1, Message: "installing buildbot-worker"},
		bake.Event{Type: bake.EventProgress, Step: "provision", Percent: -1, Message: "\x1b[1mcreating\x1b[0m the\tvenv\r"},
	)
	c.t = c.t.Add(12300 * time.Millisecond)
	got := m.View()
	spin := spinner.New(spinner.WithSpinner(spinner.MiniDot)).View()
	want := strings.Join([]string{
		"w1 (12.3s)",
		"  ✓ preflight       0.4s",
		"  ✓ launch builder  1m15s",
		"  " + spin + " provision       12.3s",
		"      creating the venv",
		"",
	}, "\n") + "\n"
	if got != want {
		t.Errorf("view:\n%s\nwant:\n%s", got, want)
	}

	// Snapshot percent replaces the detail; a failed step says so; the
	// last frame has no spinner.
	m = feed(m, c, "w1",
		bake.Event{Type: bake.EventStepFinished, Step: "provision", Elapsed: 16 * time.Second},
		bake.Event{Type: bake.EventStepStarted, Step: "create image"},
		bake.Event{Type: bake.EventProgress, Step: "create image", Percent: 40, Message: "snapshot snap-1"},
	)
	if v := m.View(); !strings.Contains(v, "      snapshot snap-1 (40%)\n") || !strings.Contains(v, "  "+spin+" create image    0.0s\n") {
		t.Errorf("view:\n%s", v)
	}
	m = feed(m, c, "w1", bake.Event{Type: bake.EventStepFinished, Step: "create image", Elapsed: 3 * time.Second, Err: "boom"})
	m, cmd := m.Update(endMsg{})
	if cmd == nil {
		t.Errorf("endMsg: no quit command")
	}
	v := m.View()
	if !strings.Contains(v, "  ✗ create image    failed after 3.0s\n") || strings.Contains(v, spin) {
		t.Errorf("last view:\n%s", v)
	}
}

// Several workers each get their block, in the order they first spoke, and
// lines are cut to the terminal's width.
func TestLiveModelBlocksAndWidth(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	var m tea.Model = newLiveModel(c.now)
	m, _ = m.Update(tea.WindowSizeMsg{Width: 30, Height: 20})
	m = feed(m, c, "b", bake.Event{Type: bake.EventStepStarted, Step: "preflight"})
	m = feed(m, c, "a", bake.Event{Type: bake.EventStepStarted, Step: "provision"},
		bake.Event{Type: bake.EventProgress, Percent: -1, Message: strings.Repeat("x", 100)})
	m, _ = m.Update(endMsg{})
	want := "b (0.0s)\n  … preflight  0.0s\na (0.0s)\n  … provision  0.0s\n      xxxxxxxxxxxxxxxxxxxxxx…\n\n"
	if got := m.View(); got != want {
		t.Errorf("view:\n%q\nwant:\n%q", got, want)
	}
}

func TestPermanentLines(t *testing.T) {
	r := &bake.Leftover{Resource: "instance", ID: "i-1", Command: "aws ec2 terminate-instances --instance-ids i-1"}
	for _, tc := range []struct {
		e       bake.Event
		verbose bool
		want    string
	}{
		{bake.Event{Type: bake.EventWarning, Message: "slow"}, false, "warning: slow"},
		{bake.Event{Type: bake.EventUndo, Resource: r}, false, "removed instance i-1"},
		{bake.Event{Type: bake.EventCreated, Resource: r}, false, ""},
		{bake.Event{Type: bake.EventCreated, Resource: r}, true, "created instance i-1"},
		{bake.Event{Type: bake.EventProgress, Percent: -1, Message: "pip install"}, false, ""},
		{bake.Event{Type: bake.EventProgress, Percent: -1, Message: "pip install"}, true, "  | pip install"},
		{bake.Event{Type: bake.EventProgress, Percent: 10}, true, ""},
		{bake.Event{Type: bake.EventLeftover, Leftover: &bake.Leftover{Resource: "image", ID: "ami-1", Command: "x", Kept: true}}, false, "kept image ami-1; remove it with: x"},
	} {
		if got := permanentLine(tc.e, tc.verbose); got != tc.want {
			t.Errorf("%+v verbose=%v: %q, want %q", tc.e, tc.verbose, got, tc.want)
		}
	}
}

// A writer that is no terminal (a pipe, a file, a buffer) gets the plain
// lines: not one byte below 0x20 but newlines, so no escape code.
func TestPlainOutputHasNoEscapes(t *testing.T) {
	var buf bytes.Buffer
	if isLiveTerminal(&buf) {
		t.Fatal("a buffer taken for a terminal")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isLiveTerminal(f) {
		t.Fatal("/dev/null taken for a terminal")
	}
	p := newTextPrinter(&buf, true)
	r := &bake.Leftover{Resource: "instance", ID: "i-1", Command: "aws ec2 terminate-instances --instance-ids i-1"}
	for _, e := range []bake.Event{
		{Type: bake.EventStepStarted, Step: "provision"},
		{Type: bake.EventCreated, Resource: r},
		{Type: bake.EventProgress, Step: "provision", Percent: -1, Message: "installing"},
		{Type: bake.EventProgress, Step: "create image", Percent: 40, Message: "snapshot"},
		{Type: bake.EventStepFinished, Step: "provision", Elapsed: time.Second},
		{Type: bake.EventUndo, Resource: r},
		{Type: bake.EventWarning, Message: "w"},
	} {
		p.Event(e)
	}
	p.close()
	if buf.Len() == 0 {
		t.Fatal("no output")
	}
	for i, b := range buf.Bytes() {
		if b < 0x20 && b != '\n' {
			t.Fatalf("byte %d is %#x in:\n%q", i, b, buf.String())
		}
	}
}

// With TERM=dumb or no TERM even a terminal gets plain lines.
func TestLiveTerminal(t *testing.T) {
	for _, tc := range []struct {
		tty  bool
		term string
		want bool
	}{{true, "xterm-256color", true}, {true, "screen", true}, {true, "dumb", false}, {true, "", false}, {false, "xterm", false}} {
		if got := liveTerminal(tc.tty, tc.term); got != tc.want {
			t.Errorf("tty=%v TERM=%q: %v, want %v", tc.tty, tc.term, got, tc.want)
		}
	}
}

// The program itself, drawing to a buffer: the lines printed above the
// blocks come in order, the last frame has every step, and after stop the
// printer falls back to plain lines.
func TestLiveViewProgram(t *testing.T) {
	var buf bytes.Buffer // read once the program has ended
	v := newLiveView(&buf, false)
	p, q := v.printer("w1", &buf), v.printer("w2", &buf)
	q.Event(bake.Event{Type: bake.EventStepStarted, Step: "preflight"})
	q.close() // w1 still runs: the view goes on
	r := &bake.Leftover{Resource: "instance", ID: "i-1", Command: "x"}
	p.Event(bake.Event{Type: bake.EventStepStarted, Step: "preflight"})
	p.Event(bake.Event{Type: bake.EventStepFinished, Step: "preflight", Elapsed: time.Second})
	p.Event(bake.Event{Type: bake.EventStepStarted, Step: "launch builder"})
	p.Event(bake.Event{Type: bake.EventCreated, Resource: r})
	p.Event(bake.Event{Type: bake.EventWarning, Message: "first"})
	p.Event(bake.Event{Type: bake.EventWarning, Message: "second"})
	fmt.Fprintf(v, "kept builder i-2\n")
	stopLiveViews()
	p.Event(bake.Event{Type: bake.EventUndo, Resource: r})
	p.close()
	out := buf.String()
	first, second := strings.Index(out, "warning: first"), strings.Index(out, "warning: second")
	if kept := strings.Index(out, "kept builder i-2"); first < 0 || second < first || kept < second {
		t.Errorf("warnings missing or out of order:\n%q", out)
	}
	if !strings.Contains(out, "✓ preflight") || !strings.Contains(out, "… launch builder") || !strings.Contains(out, "w2 (") {
		t.Errorf("last frame missing:\n%q", out)
	}
	plain := out[strings.LastIndex(out, "… launch builder"):]
	if !strings.Contains(plain, "s] removed instance i-1\n") {
		t.Errorf("no plain line after stop:\n%q", plain)
	}
	leftovers.mu.Lock()
	_, live := leftovers.live["i-1"]
	leftovers.mu.Unlock()
	if live {
		t.Errorf("leftover i-1 still tracked after its undo")
	}
}
