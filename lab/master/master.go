// Package master runs a real buildbot master for the lab, started as a
// child process that listens on loopback only, with one builder and one
// ForceScheduler (or a configuration directory of the caller's), so a test
// can prove that a baked worker connects to a master and runs a build. The
// master is Debian's buildbot 3.7 on the host's Python, or (Flavour,
// EnsurePip) a buildbot from PyPI, e.g. 4.3.0 as CPython's master pins it,
// in a venv on the Python 3.13 of a Debian 13 root filesystem. It also has a small client for the
// master's REST API (Client) that works against any buildbot master URL.
//
// The package owns the master's base directory (master.cfg, the sqlite
// database, a stub www plugin, the logs) and the master process. It does not
// own workers: tests and the lab start them (on the host, or inside instances
// whose worker connects to PBAddr), and EC2 latent workers come from the
// caller's Config.Extra.
//
// Debian ships buildbot without its web UI; its master is given a stub "base"
// www plugin (see plugin.go) so that the REST API at /api/v2 works. There is
// no authentication: anything that can reach the loopback port can control
// the master, which is fine for a lab and nothing else.
package master

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultBuildbot is Debian's buildbot command. Its interpreter is the
// system Python, which is where buildbot is installed; a `python3` found on
// PATH may not have buildbot.
const DefaultBuildbot = "/usr/bin/buildbot"

// Default timeouts used when the Config leaves them zero.
const (
	DefaultStartTimeout = 60 * time.Second
	DefaultStopTimeout  = 15 * time.Second
)

// Worker is a plain (non-latent) worker the master accepts.
type Worker struct {
	Name     string // a buildbot identifier: letters, digits, '_', '-'
	Password string
	// ParallelTests is the worker's parallel_tests, as CPython's master
	// declares it: the CPython builder's make -jN and test -jN; 0 leaves
	// it unset (make without -j, tests -j2, as the fleet does).
	ParallelTests int
}

// CPythonBuilder is the master's CPython builder: a factory shaped like
// the fleet's UnixBuild (cpython.py) that builds Repo's Branch.
type CPythonBuilder struct {
	// Repo is the git URL the workers clone (the lab's repository, served
	// on loopback); Branch its branch.
	Repo, Branch string
	// Tests are the short test run's tests (regrtest names: test_socket,
	// test_asyncio.test_events); empty: DefaultCPythonTests.
	Tests []string
}

// DefaultCPythonTests is the short test run: test_socket and the parts of
// test_asyncio that resolve services and protocols (/etc/services and
// /etc/protocols: netbase) or use sockets, and a test of each optional
// module a build dependency brings. Measured on two busy cores (load 15),
// the whole of test_asyncio adds about 9 minutes of its tasks, futures,
// subprocess and sendfile tests to it.
var DefaultCPythonTests = []string{
	"test_socket", "test_asyncio.test_base_events", "test_asyncio.test_events",
	"test_asyncio.test_sock_lowlevel", "test_asyncio.test_selector_events", "test_asyncio.test_streams",
	"test_asyncio.test_unix_events", "test_asyncio.test_ssl",
	"test_ssl", "test_ctypes", "test_zlib", "test_bz2", "test_lzma", "test_sqlite3",
	"test_dbm", "test_uuid", "test_readline", "test_hashlib",
}

// CPythonBuilderName is the CPython builder's name.
const CPythonBuilderName = "cpython"

// Config describes a lab master.
type Config struct {
	// Dir is the master's base directory, created if missing. If it already
	// holds a master (buildbot.tac), that master is started again with a
	// freshly written master.cfg and its existing database.
	Dir string
	// Host is the IPv4 loopback address both ports bind to; default
	// 127.0.0.1. Workers may connect from any local address, e.g. 127.0.0.N.
	Host string
	// PBPort is the port workers connect to; 0 picks a free one.
	PBPort int
	// WWWPort is the port of the REST API; 0 picks a free one.
	WWWPort int
	// Workers are plain workers, each with its own password.
	Workers []Worker
	// Extra is Python code inserted into master.cfg verbatim, after
	// `c = BuildmasterConfig = {}` and the plain workers. It may append more
	// workers to c['workers'] (e.g. an EC2LatentWorker from a handoff
	// snippet) and must then list their names in ExtraWorkerNames.
	Extra            string
	ExtraWorkerNames []string
	// BuilderName names the trivial builder, which runs HelloCommand on
	// any of the workers; default "lab-builder".
	BuilderName string
	// CPython, when set, adds the CPython builder (CPythonBuilderName) on
	// every worker, beside the trivial one.
	CPython *CPythonBuilder
	// SchedulerName names the ForceScheduler for that builder; default
	// "force".
	SchedulerName string
	// Env is extra environment for the master process ("KEY=value"), e.g.
	// for boto3. It overrides the inherited environment; a PYTHONPATH in it
	// is appended to the stub plugin's directory.
	Env []string
	// AWSEndpoint, when set, is where every boto3 client and resource the
	// master makes goes unless told otherwise: what AWS_ENDPOINT_URL does
	// for newer boto3 (Debian's 1.26 predates it). An EC2LatentWorker
	// pasted as handed off then talks to the lab. Loopback http URLs only.
	AWSEndpoint string
	// Secrets are files in the master's secrets directory (secretsDir,
	// 0700; each file 0600), read by a SecretInAFile provider, so
	// util.Secret("name") and a handoff snippet's secret files work. Names
	// are file names: letters, digits, '.', '_', '-'.
	Secrets map[string]string

	// Flavour is the buildbot the master runs; zero: Debian's (Debian()).
	Flavour Flavour
	// ConfigDir, when set, is a master configuration directory (master.cfg
	// and the files it imports, e.g. a settings file) whose files are
	// copied into Dir instead of a rendered master.cfg: Workers, Extra,
	// ExtraWorkerNames, AWSEndpoint, Secrets and SchedulerName are not
	// used, the ports must be set (and be the ones the configuration
	// listens on), and BuilderName must name one of its builders (Start
	// waits until the REST API lists it).
	ConfigDir string

	// Buildbot is the buildbot command; default Flavour.Buildbot, else
	// DefaultBuildbot.
	Buildbot string
	// StartTimeout bounds Start; default DefaultStartTimeout.
	StartTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL;
	// default DefaultStopTimeout.
	StopTimeout time.Duration

	// pickPorts replaces freePorts in tests, to provoke a port collision.
	pickPorts func(host string, pb, www int) (int, int, error)
}

// ErrNotInstalled is returned by Start when the buildbot command is missing
// (apt-get install buildbot).
var ErrNotInstalled = errors.New("buildbot is not installed")

// Master is a running buildbot master process.
type Master struct {
	cfg     Config // with defaults and the ports actually used
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // the process's exit status; read after done

	stopOnce sync.Once
	stopErr  error
}

// Names of files in the master's directory.
const (
	cfgFile    = "master.cfg"
	secretsDir = "secrets"
	tacFile    = "buildbot.tac"
	dbFile     = "state.sqlite"
	twistdLog  = "twistd.log"
	processLog = "master.log" // the process's stdout and stderr
)

// maxPortAttempts bounds how often Start retries with new ports when a port
// it picked was taken by someone else before the master bound it.
const maxPortAttempts = 3

// Start creates the master in cfg.Dir if needed, writes master.cfg, starts
// the master and returns once its REST API answers and knows the builder.
//
// ctx and cfg.StartTimeout bound only the start; the master keeps running
// until Stop. On error (including cancel) no master process is left running
// and the error includes the tail of the master's logs. Invalid
// configurations wrap ErrInvalidConfig, a missing buildbot ErrNotInstalled.
//
// The master runs as the calling user; buildbot 3.7 and twistd do not object
// to root. It is killed (SIGKILL) if the thread that started it exits, which
// in Go means when this process dies without calling Stop.
func Start(ctx context.Context, cfg Config) (*Master, error) {
	cfg = cfg.withDefaults()
	if cfg.Buildbot == "" {
		cfg.Buildbot = cfg.Flavour.Buildbot
	}
	if cfg.Buildbot == "" {
		cfg.Buildbot = DefaultBuildbot
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("start master: %w: Dir is empty", ErrInvalidConfig)
	}
	if cfg.ConfigDir != "" {
		if cfg.PBPort == 0 || cfg.WWWPort == 0 {
			return nil, fmt.Errorf("start master: %w: a ConfigDir needs both ports set", ErrInvalidConfig)
		}
	} else if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("start master: %w", err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start master: %w", err)
	}
	cfg.Dir = dir
	if _, err := exec.LookPath(cfg.Buildbot); err != nil {
		return nil, fmt.Errorf("start master: %w: %w", ErrNotInstalled, err)
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start master: create dir: %w", err)
	}
	pylib := ""
	if !cfg.Flavour.WWW {
		if pylib, err = writePlugin(dir); err != nil {
			return nil, fmt.Errorf("start master in %s: %w", dir, err)
		}
	}
	env := masterEnv(os.Environ(), cfg.Env, pylib)

	// A master is created once (buildbot.tac, then the database); an
	// interrupted creation is finished on the next Start.
	if !exists(filepath.Join(dir, tacFile)) || !exists(filepath.Join(dir, dbFile)) {
		if err := createMaster(ctx, cfg.Flavour, cfg.Buildbot, dir, env); err != nil {
			return nil, fmt.Errorf("start master: %w", err)
		}
	}

	if cfg.pickPorts == nil {
		cfg.pickPorts = freePorts
	}
	pickPorts := cfg.PBPort == 0 || cfg.WWWPort == 0
	for attempt := 1; ; attempt++ {
		c := cfg
		if pickPorts {
			if c.PBPort, c.WWWPort, err = c.pickPorts(c.Host, c.PBPort, c.WWWPort); err != nil {
				return nil, fmt.Errorf("start master: %w", err)
			}
		}
		// A port given by the caller must be free now: twistd may report
		// a failed listen only after the REST API already answers.
		var given []int
		for _, p := range []int{cfg.PBPort, cfg.WWWPort} {
			if p != 0 {
				given = append(given, p)
			}
		}
		if err := portsFree(c.Host, given...); err != nil {
			return nil, fmt.Errorf("start master: %w", err)
		}
		m, err := start(ctx, c, env)
		if err == nil {
			return m, nil
		}
		// Retry only if someone took a port that was picked here.
		var taken *portTakenError
		picked := errors.As(err, &taken) &&
			(cfg.PBPort == 0 && taken.port == c.PBPort || cfg.WWWPort == 0 && taken.port == c.WWWPort)
		if !picked || attempt == maxPortAttempts || ctx.Err() != nil {
			return nil, err
		}
	}
}

// portTakenError is a start that failed because a port was in use.
type portTakenError struct {
	port int
	err  error
}

func (e *portTakenError) Error() string { return e.err.Error() }
func (e *portTakenError) Unwrap() error { return e.err }

// cannotListenRE matches Twisted's CannotListenError in twistd.log.
var cannotListenRE = regexp.MustCompile(`Couldn't listen on [^\s]*:(\d+): .*Address already in use`)

// start writes master.cfg for cfg (ports set) and runs the master.
func start(ctx context.Context, cfg Config, env []string) (*Master, error) {
	if cfg.ConfigDir != "" {
		if err := copyConfigDir(cfg.ConfigDir, cfg.Dir); err != nil {
			return nil, fmt.Errorf("start master: %w", err)
		}
	} else {
		text, err := Render(cfg)
		if err != nil {
			return nil, fmt.Errorf("start master: %w", err)
		}
		if err := writeSecrets(filepath.Join(cfg.Dir, secretsDir), cfg.Secrets); err != nil {
			return nil, fmt.Errorf("start master: %w", err)
		}
		if err := writeSecret(filepath.Join(cfg.Dir, cfgFile), text); err != nil {
			return nil, fmt.Errorf("start master: %w", err)
		}
	}
	logFile, err := os.OpenFile(filepath.Join(cfg.Dir, processLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start master: open log: %w", err)
	}
	// twistd.log is appended to across starts; remember where this start's
	// part begins so that errors show only this start.
	logStart := fileSize(filepath.Join(cfg.Dir, twistdLog))
	procStart := fileSize(filepath.Join(cfg.Dir, processLog))

	// `buildbot start --nodaemon` runs twistd in the same process (no
	// fork), so cmd.Process is the master itself.
	// In a root filesystem, the shell that mounts it becomes chroot, then
	// env, then buildbot: the same process. If this process dies without
	// Stop, Pdeathsig does not leave a master behind.
	cmd := cfg.Flavour.command(context.Background(), cfg.Dir, env, cfg.Buildbot, "start", "--nodaemon", cfg.Dir)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start master: run %s: %w", cfg.Buildbot, err)
	}
	m := &Master{cfg: cfg, cmd: cmd, logFile: logFile, done: make(chan struct{})}
	go func() {
		m.waitErr = cmd.Wait()
		close(m.done)
	}()

	if err := m.waitReady(ctx); err != nil {
		// Kill at once: a master that failed to start has nothing to save.
		if kerr := m.kill(); kerr != nil {
			err = errors.Join(err, kerr)
		}
		logFile.Close()
		tail := logTail(filepath.Join(cfg.Dir, twistdLog), logStart) +
			logTail(filepath.Join(cfg.Dir, processLog), procStart)
		err = fmt.Errorf("start master in %s: %w\n--- log tail ---\n%s", cfg.Dir, err, tail)
		if mm := cannotListenRE.FindStringSubmatch(tail); mm != nil {
			port, _ := strconv.Atoi(mm[1])
			err = &portTakenError{port: port, err: err}
		}
		return nil, err
	}
	return m, nil
}

// waitReady polls the REST API until it lists the builder, the process
// exits, or ctx ends.
func (m *Master) waitReady(ctx context.Context) error {
	// Probes end as soon as the master exits, not at their own timeout.
	probeCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.done:
			cancel()
		case <-probeCtx.Done():
		}
	}()
	c := m.Client()
	c.HTTP = &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		_, err := c.BuilderID(probeCtx, m.cfg.BuilderName)
		if err == nil {
			// The REST API may answer before the worker port listens.
			var conn net.Conn
			conn, err = (&net.Dialer{Timeout: time.Second}).DialContext(probeCtx, "tcp4", m.PBAddr())
			if err == nil {
				conn.Close()
				return nil
			}
			err = fmt.Errorf("worker port %s: %w", m.PBAddr(), err)
		}
		lastErr = err
		select {
		case <-m.done:
			return fmt.Errorf("master exited during start (%v)", exitStatus(m.waitErr))
		case <-ctx.Done():
			return fmt.Errorf("wait for REST API at %s: %w (last error: %v)", m.URL(), ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

// exitStatus describes the result of exec.Cmd.Wait.
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// createMaster runs `buildbot create-master`, which writes buildbot.tac and
// creates the sqlite database.
func createMaster(ctx context.Context, f Flavour, buildbot, dir string, env []string) error {
	cmd := f.command(ctx, dir, env, buildbot, "create-master", "--relocatable",
		"--db", "sqlite:///"+dbFile, dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("buildbot create-master %s: %w\n%s", dir, err, tail(out, 30))
	}
	return nil
}

// masterEnv builds the master's environment: the inherited one without
// Python variables that could point the system Python elsewhere, the stub
// plugin on PYTHONPATH, then extra.
func masterEnv(inherited, extra []string, pylib string) []string {
	var env []string
	for _, kv := range inherited {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV":
			continue
		}
		env = append(env, kv)
	}
	var pythonPath []string
	if pylib != "" {
		pythonPath = append(pythonPath, pylib)
	}
	for _, kv := range extra {
		if k, v, _ := strings.Cut(kv, "="); k == "PYTHONPATH" && v != "" {
			pythonPath = append(pythonPath, v)
			continue
		}
		env = append(env, kv)
	}
	if len(pythonPath) > 0 {
		env = append(env, "PYTHONPATH="+strings.Join(pythonPath, string(os.PathListSeparator)))
	}
	return append(env, "PYTHONUNBUFFERED=1")
}

// freePorts returns pb and www unless zero, with zeros replaced by free
// ports on host. Both listeners are open at once, so the ports differ. A
// port can still be taken between now and the master binding it; Start
// retries then.
func freePorts(host string, pb, www int) (int, int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	pick := func(p int) (int, error) {
		if p != 0 {
			return p, nil
		}
		l, err := net.Listen("tcp4", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("pick free port on %s: %w", host, err)
		}
		ls = append(ls, l)
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	pb, err := pick(pb)
	if err != nil {
		return 0, 0, err
	}
	www, err = pick(www)
	if err != nil {
		return 0, 0, err
	}
	return pb, www, nil
}

// writeSecret writes data to path with mode 0600 (also when path exists
// with other permissions), atomically.
func writeSecret(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600.
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeSecrets makes dir hold exactly secrets, one 0600 file each, in a
// 0700 directory (SecretInAFile refuses files others can read).
func writeSecrets(dir string, secrets map[string]string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if len(secrets) == 0 {
		return nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	for name, value := range secrets {
		if err := writeSecret(filepath.Join(dir, name), []byte(value)); err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
	}
	return nil
}

// Stop stops the master: SIGTERM to its process group, then SIGKILL after
// Config.StopTimeout or as soon as ctx ends. It returns once the process has
// exited, and an error only if a process could not be removed. A master that
// had to be killed is not an error. Stop is safe to call more than once.
func (m *Master) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() { m.stopErr = m.stop(ctx) })
	return m.stopErr
}

func (m *Master) stop(ctx context.Context) error {
	defer m.logFile.Close()
	pgid := m.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop master %d: SIGTERM: %w", pgid, err)
	}
	grace := time.NewTimer(m.cfg.StopTimeout)
	defer grace.Stop()
	select {
	case <-m.done:
	case <-grace.C:
	case <-ctx.Done():
	}
	return m.kill()
}

// kill sends SIGKILL to the process group, waits (bounded) until the master
// has been reaped, and then kills anything left in its group.
func (m *Master) kill() error {
	pgid := m.cmd.Process.Pid
	select {
	case <-m.done:
	default:
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop master %d: SIGKILL: %w", pgid, err)
		}
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("stop master %d: still running 10s after SIGKILL", pgid)
		}
	}
	// The master has no children of its own, but be sure.
	if err := syscall.Kill(-pgid, 0); err == nil {
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop master: kill leftover processes of group %d: %w", pgid, err)
		}
	}
	return nil
}

// Kill ends the master at once with SIGKILL, as a crash would: nothing it
// started is shut down (a latent worker's instance keeps running). It
// returns once the process has been reaped.
func (m *Master) Kill() error {
	var err error
	m.stopOnce.Do(func() {
		defer m.logFile.Close()
		m.stopErr = m.kill()
		err = m.stopErr
	})
	return err
}

// Done is closed when the master process has exited, for whatever reason.
func (m *Master) Done() <-chan struct{} { return m.done }

// PID is the master process's ID, also its process group ID.
func (m *Master) PID() int { return m.cmd.Process.Pid }

// Dir is the master's base directory (absolute).
func (m *Master) Dir() string { return m.cfg.Dir }

// URL is the base URL of the master's web server, e.g.
// "http://127.0.0.1:8010/"; the REST API is under api/v2.
func (m *Master) URL() string { return httpURL(m.cfg.Host, m.cfg.WWWPort) }

// PBAddr is the host:port workers connect to.
func (m *Master) PBAddr() string { return net.JoinHostPort(m.cfg.Host, strconv.Itoa(m.cfg.PBPort)) }

// Config returns the configuration the master runs with: defaults applied
// and the ports it actually uses.
func (m *Master) Config() Config { return m.cfg }

// Client returns a REST API client for this master.
func (m *Master) Client() *Client { return &Client{BaseURL: m.URL()} }

// LogTail returns the last lines of the master's twistd.log.
func (m *Master) LogTail() string { return logTail(filepath.Join(m.cfg.Dir, twistdLog), 0) }

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// fileSize is the size of path, or 0 if it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTailLines is how many lines of a log go into an error.
const logTailLines = 40

// logTail returns the last lines of path written after offset from, headed
// with the file's name, or "" if there are none.
func logTail(path string, from int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxBytes = 16 << 10
	if size := fileSize(path); size-from > maxBytes {
		from = size - maxBytes
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return ""
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBytes))
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return ""
	}
	return "==> " + filepath.Base(path) + " <==\n" + tail(data, logTailLines)
}

// tail returns the last n lines of data.
func tail(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// portsFree checks that the ports can be bound on host now.
func portsFree(host string, ports ...int) error {
	for _, p := range ports {
		ln, err := net.Listen("tcp4", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return &portTakenError{port: p, err: fmt.Errorf("port %d on %s: Address already in use (%w)", p, host, err)}
		}
		ln.Close()
	}
	return nil
}

// copyConfigDir copies the regular files of src and its subdirectories into
// dst (0600 files: a configuration may hold secrets), replacing files of the
// same name. Python caches are skipped.
func copyConfigDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "__pycache__" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("config dir %s: %s is not a regular file", src, rel)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return writeSecret(filepath.Join(dst, rel), data)
	})
}
