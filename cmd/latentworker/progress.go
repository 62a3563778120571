package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/latentworker/latentworker/bake"
)

// printer renders a run's events: as text on stderr, or as JSON lines.
type printer interface {
	bake.Events
	// result prints the final result object (JSON) or summary (text).
	close()
}

// textPrinter writes progress for humans to w, with elapsed time, and a
// "still running" line when a step is quiet for a while.
type textPrinter struct {
	w       io.Writer
	start   time.Time
	mu      sync.Mutex
	step    string
	stepAt  time.Time
	lastOut time.Time
	done    chan struct{}
	verbose bool
}

func newTextPrinter(w io.Writer, verbose bool) *textPrinter {
	p := &textPrinter{w: w, start: time.Now(), done: make(chan struct{}), verbose: verbose}
	go p.tick(10 * time.Second)
	return p
}

func (p *textPrinter) tick(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case now := <-t.C:
			p.mu.Lock()
			if p.step != "" && now.Sub(p.lastOut) >= every {
				p.line("%s: still running (%s in this step)", p.step, now.Sub(p.stepAt).Round(time.Second))
			}
			p.mu.Unlock()
		}
	}
}

// line prints one line with the run's elapsed time; p.mu held.
func (p *textPrinter) line(format string, a ...any) {
	fmt.Fprintf(p.w, "[%6.1fs] "+format+"\n", append([]any{time.Since(p.start).Seconds()}, a...)...)
	p.lastOut = time.Now()
}

func (p *textPrinter) Event(e bake.Event) {
	leftovers.track(e)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Type {
	case bake.EventStepStarted:
		p.step, p.stepAt = e.Step, time.Now()
		p.line("%s", e.Step)
	case bake.EventStepFinished:
		if e.Err != "" {
			p.line("%s failed after %s", e.Step, e.Elapsed.Round(time.Millisecond))
		} else {
			p.line("%s done (%s)", e.Step, e.Elapsed.Round(time.Millisecond))
		}
		p.step = ""
	case bake.EventProgress:
		switch {
		case e.Percent >= 0 && e.Message == "":
			p.line("%s: %d%%", e.Step, e.Percent)
		case e.Percent >= 0:
			p.line("%s: %s (%d%%)", e.Step, e.Message, e.Percent)
		case p.verbose:
			p.line("  | %s", e.Message)
		}
	case bake.EventWarning:
		p.line("warning: %s", e.Message)
	case bake.EventCreated:
		if p.verbose {
			p.line("created %s %s", e.Resource.Resource, e.Resource.ID)
		}
	case bake.EventUndo:
		p.line("removed %s %s", e.Resource.Resource, e.Resource.ID)
	case bake.EventLeftover:
		if l := e.Leftover; l.Kept {
			p.line("kept %s %s; remove it with: %s", l.Resource, l.ID, l.Command)
		} else {
			p.line("LEFT BEHIND: %s", l)
		}
	}
}

func (p *textPrinter) close() { close(p.done) }

// jsonPrinter writes one JSON object per event, newline-delimited, with a
// time field.
type jsonPrinter struct {
	mu  sync.Mutex
	enc *json.Encoder
	// ended: a result or error event was emitted.
	ended bool
}

func newJSONPrinter(w io.Writer) *jsonPrinter { return &jsonPrinter{enc: json.NewEncoder(w)} }

type jsonEvent struct {
	Time string `json:"time"`
	bake.Event
}

func (p *jsonPrinter) Event(e bake.Event) {
	leftovers.track(e)
	p.emit(jsonEvent{Time: time.Now().UTC().Format(time.RFC3339Nano), Event: e})
}

func (p *jsonPrinter) emit(v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := v.(map[string]any); ok && (m["type"] == "result" || m["type"] == "error") {
		p.ended = true
	}
	_ = p.enc.Encode(v)
}

// endWithError emits an error event for err unless a result or error event
// ended the stream already: with --json every failure, bad input included,
// ends with one.
func endWithError(w io.Writer, p *jsonPrinter, err error) {
	if err == nil || (p != nil && p.ended) {
		return
	}
	if p == nil {
		p = newJSONPrinter(w)
	}
	ev := map[string]any{"type": "error", "error": err.Error(), "exit_code": report(io.Discard, err)}
	p.emit(ev)
}

func (p *jsonPrinter) close() {}

// leftovers tracks what a run created and has not removed, so that a second
// Ctrl-C can say what it leaves behind and how to remove it.
var leftovers = &tracker{live: map[string]bake.Leftover{}}

type tracker struct {
	mu   sync.Mutex
	seq  int
	live map[string]bake.Leftover
	at   map[string]int
}

func (t *tracker) track(e bake.Event) {
	if e.Resource == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.at == nil {
		t.at = map[string]int{}
	}
	switch e.Type {
	case bake.EventCreated:
		t.seq++
		t.live[e.Resource.ID] = *e.Resource
		t.at[e.Resource.ID] = t.seq
	case bake.EventUndo:
		delete(t.live, e.Resource.ID)
	}
}

func (t *tracker) print(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.live) == 0 {
		fmt.Fprintln(w, "latentworker: nothing of this run is left")
		return
	}
	var ls []bake.Leftover
	for _, l := range t.live {
		ls = append(ls, l)
	}
	sort.Slice(ls, func(i, j int) bool { return t.at[ls[i].ID] > t.at[ls[j].ID] })
	fmt.Fprintln(w, "latentworker: left behind (newest first; each carries the run's latentworker:run-id tag):")
	for _, l := range ls {
		fmt.Fprintf(w, "  %s %s: %s\n", l.Resource, l.ID, l.Command)
	}
}
