package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"golang.org/x/term"

	"github.com/latentworker/latentworker/bake"
)

// A live view draws a run's progress in place on a terminal: the finished
// steps with their times, then the current step with a spinner, its elapsed
// time and its detail (the step's latest progress: snapshot percent, the
// script's latest line). It keeps one block per key, so that several workers
// baking at once each get theirs; today bake has one key, the worker's name.
// Pipes, cron, TERM=dumb and --json get the plain lines of textPrinter instead.

// isLiveTerminal reports whether w is a terminal that can take a live view.
func isLiveTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return liveTerminal(ok && term.IsTerminal(int(f.Fd())), os.Getenv("TERM"))
}

// liveTerminal: a terminal, and one that can move its cursor.
func liveTerminal(tty bool, termEnv string) bool {
	return tty && termEnv != "" && termEnv != "dumb"
}

// liveView runs the terminal program that draws the blocks.
type liveView struct {
	w       io.Writer
	start   time.Time
	verbose bool
	prog    *tea.Program
	done    chan struct{} // closed when the program has ended and the terminal is restored

	mu      sync.Mutex
	stopped bool
	open    int // printers not closed yet
}

// views are the live views running, stopped by main before it prints about
// a signal, so that its lines never land inside a frame.
var views struct {
	mu  sync.Mutex
	all []*liveView
}

// stopLiveViews ends every live view, leaving its last frame on the screen
// and the terminal as it was; what follows is printed as plain lines.
func stopLiveViews() {
	views.mu.Lock()
	all := append([]*liveView(nil), views.all...)
	views.mu.Unlock()
	for _, v := range all {
		v.stop()
	}
}

func newLiveView(w io.Writer, verbose bool) *liveView {
	v := &liveView{w: w, start: time.Now(), verbose: verbose, done: make(chan struct{})}
	m := newLiveModel(time.Now)
	started := make(chan struct{})
	m.started = started
	v.prog = tea.NewProgram(m,
		tea.WithOutput(w),
		tea.WithInput(nil),         // never read the keyboard: Ctrl-C stays a signal for main
		tea.WithoutSignalHandler(), // main handles SIGINT and SIGTERM
	)
	go func() {
		defer close(v.done)
		_, _ = v.prog.Run()
	}()
	select {
	case <-started:
	case <-v.done:
		// The terminal would not take it: plain lines.
		v.stopped = true
		return v
	}
	views.mu.Lock()
	views.all = append(views.all, v)
	views.mu.Unlock()
	return v
}

// printer returns the events printer of block key; once the view has
// stopped, it prints plain lines to plain. The view ends when the last
// printer it gave is closed (several runs at once each close theirs).
func (v *liveView) printer(key string, plain io.Writer) printer {
	v.mu.Lock()
	v.open++
	v.mu.Unlock()
	return &livePrinter{v: v, key: key, plainW: plain}
}

// Write prints whole lines above the blocks while the view runs, and
// straight to the terminal once it has stopped.
func (v *liveView) Write(b []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped || v.ended() {
		return v.w.Write(b)
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		v.prog.Println(sanitize(l))
	}
	return len(b), nil
}

// ended reports whether the program ended on its own (it cannot after it
// started, short of a panic): then nothing must block on it. v.mu held.
func (v *liveView) ended() bool {
	select {
	case <-v.done:
		v.stopped = true
		return true
	default:
		return false
	}
}

// stop ends the program and waits (a little) for it to restore the terminal.
func (v *liveView) stop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped {
		return
	}
	v.stopped = true
	// The model draws its last frame, without spinner, and quits.
	v.prog.Send(endMsg{})
	select {
	case <-v.done:
	case <-time.After(2 * time.Second):
		v.prog.Kill()
		<-v.done
	}
	views.mu.Lock()
	for i, o := range views.all {
		if o == v {
			views.all = append(views.all[:i], views.all[i+1:]...)
			break
		}
	}
	views.mu.Unlock()
}

// livePrinter sends one block's events to the view.
type livePrinter struct {
	v      *liveView
	key    string
	plainW io.Writer
	plain  *textPrinter // once the view stopped; v.mu held
	closed bool
}

func (p *livePrinter) Event(e bake.Event) {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	if p.v.stopped || p.v.ended() {
		if p.plain == nil {
			p.plain = &textPrinter{w: p.plainW, start: p.v.start, lastOut: time.Now(), done: make(chan struct{}), verbose: p.v.verbose}
			go p.plain.tick(10 * time.Second)
		}
		p.plain.Event(e) // tracks leftovers too
		return
	}
	leftovers.track(e)
	p.v.prog.Send(eventMsg{key: p.key, e: e, at: time.Now()})
	if l := sanitize(permanentLine(e, p.v.verbose)); l != "" {
		// Printed above the blocks, in order with the events: the program
		// reads its messages one by one.
		p.v.prog.Println(l)
	}
}

func (p *livePrinter) close() {
	p.v.mu.Lock()
	if p.closed {
		p.v.mu.Unlock()
		return
	}
	p.closed = true
	if p.plain != nil {
		p.plain.close()
	}
	p.v.open--
	last := p.v.open == 0
	p.v.mu.Unlock()
	if last {
		p.v.stop()
	}
}

// permanentLine is what an event leaves above the live blocks, as plain
// text would print it: warnings, what was removed or left behind, and with
// --verbose the scripts' output and every resource created.
func permanentLine(e bake.Event, verbose bool) string {
	switch e.Type {
	case bake.EventWarning:
		return "warning: " + e.Message
	case bake.EventUndo:
		return fmt.Sprintf("removed %s %s", e.Resource.Resource, e.Resource.ID)
	case bake.EventLeftover:
		if l := e.Leftover; l.Kept {
			return fmt.Sprintf("kept %s %s; remove it with: %s", l.Resource, l.ID, l.Command)
		}
		return fmt.Sprintf("LEFT BEHIND: %s", e.Leftover)
	case bake.EventCreated:
		if verbose {
			return fmt.Sprintf("created %s %s", e.Resource.Resource, e.Resource.ID)
		}
	case bake.EventProgress:
		if verbose && e.Percent < 0 {
			return "  | " + e.Message
		}
	}
	return ""
}

// sanitize makes a line from a script's output safe to draw: no escape
// sequences, no control characters.
func sanitize(s string) string {
	s = ansi.Strip(s)
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f:
			return -1
		}
		return r
	}, s)
}

// endMsg tells the model to draw its last frame and quit.
type endMsg struct{}

// eventMsg carries one event of one block to the model.
type eventMsg struct {
	key string
	e   bake.Event
	at  time.Time
}

// liveModel is the state the view draws: no terminal in it, so that tests
// drive it with fake events and read View.
type liveModel struct {
	now    func() time.Time
	spin   spinner.Model
	width  int
	order  []string
	blocks map[string]*block
	ending bool
	// started is closed by Init: the program runs (nil in tests).
	started chan struct{}
}

// block is one worker's run.
type block struct {
	key    string
	start  time.Time
	steps  []doneStep
	step   string // current step, "" between steps
	stepAt time.Time
	detail string
}

type doneStep struct {
	name    string
	elapsed time.Duration
	failed  bool
}

func newLiveModel(now func() time.Time) liveModel {
	return liveModel{
		now:    now,
		spin:   spinner.New(spinner.WithSpinner(spinner.MiniDot)),
		blocks: map[string]*block{},
	}
}

func (m liveModel) Init() tea.Cmd {
	if m.started != nil {
		close(m.started)
	}
	return m.spin.Tick
}

func (m liveModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width = msg.Width
	case spinner.TickMsg:
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case endMsg:
		m.ending = true
		return m, tea.Quit
	case eventMsg:
		m.apply(msg)
	}
	return m, nil
}

// apply records one event in its block.
func (m *liveModel) apply(msg eventMsg) {
	b := m.blocks[msg.key]
	if b == nil {
		b = &block{key: msg.key, start: msg.at}
		m.blocks[msg.key] = b
		m.order = append(m.order, msg.key)
	}
	e := msg.e
	switch e.Type {
	case bake.EventStepStarted:
		b.step, b.stepAt, b.detail = e.Step, msg.at, ""
	case bake.EventStepFinished:
		b.steps = append(b.steps, doneStep{name: e.Step, elapsed: e.Elapsed, failed: e.Err != ""})
		b.step, b.detail = "", ""
	case bake.EventProgress:
		switch {
		case e.Percent >= 0 && e.Message == "":
			b.detail = fmt.Sprintf("%d%%", e.Percent)
		case e.Percent >= 0:
			b.detail = fmt.Sprintf("%s (%d%%)", e.Message, e.Percent)
		default:
			b.detail = e.Message
		}
		b.detail = sanitize(b.detail)
	}
}

func (m liveModel) View() string {
	var s strings.Builder
	now := m.now()
	for _, k := range m.order {
		m.blocks[k].render(&s, now, m.spin.View(), m.ending, m.width, len(m.order) > 1 || k != "")
	}
	// The renderer erases the line the cursor ends on when it stops: end
	// on an empty one.
	s.WriteString("\n")
	return s.String()
}

// render writes the block: a header when asked, the finished steps, the
// current step.
func (b *block) render(s *strings.Builder, now time.Time, spin string, ending bool, width int, header bool) {
	line := func(format string, a ...any) {
		l := fmt.Sprintf(format, a...)
		if width > 0 {
			l = ansi.Truncate(l, width-1, "…")
		}
		s.WriteString(l + "\n")
	}
	if header {
		line("%s (%s)", b.key, roundDur(now.Sub(b.start)))
	}
	pad := len(b.step)
	for _, st := range b.steps {
		pad = max(pad, len(st.name))
	}
	for _, st := range b.steps {
		mark, how := "✓", roundDur(st.elapsed)
		if st.failed {
			mark, how = "✗", "failed after "+how
		}
		line("  %s %-*s  %s", mark, pad, st.name, how)
	}
	if b.step == "" {
		return
	}
	if ending {
		spin = "…" // interrupted: a still spinner
	}
	line("  %s %-*s  %s", spin, pad, b.step, roundDur(now.Sub(b.stepAt)))
	if b.detail != "" {
		line("      %s", b.detail)
	}
}

// roundDur rounds for reading: tenths of a second under a minute, then
// seconds.
func roundDur(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}
