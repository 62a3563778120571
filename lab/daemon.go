package lab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/latentworker/latentworker/lab/aptcache"
	"github.com/latentworker/latentworker/lab/cpythonsrc"
	"github.com/latentworker/latentworker/lab/ec2front"
	"github.com/latentworker/latentworker/lab/iameval"
	"github.com/latentworker/latentworker/lab/image"
	"github.com/latentworker/latentworker/lab/loopback"
	"github.com/latentworker/latentworker/lab/machine"
	"github.com/latentworker/latentworker/lab/master"
	"github.com/latentworker/latentworker/lab/moto"
	"github.com/latentworker/latentworker/lab/pypicache"
)

// DefaultRegion is the region `latentlab env` exports. The lab answers in
// every region; its catalogue AMIs are in all of them.
const DefaultRegion = "us-east-1"

// Dummy credentials moto accepts while IAM enforcement is off. With
// iam_enforcement on, the lab works with an administrator's key instead,
// recorded in its state and exported by `latentlab env`.
const (
	DummyAccessKeyID     = "AKIALATENTLAB0000000"
	DummySecretAccessKey = "latentlab-dummy-secret"
)

// Options locate a lab on disk.
type Options struct {
	StateDir   string // runtime state: lab.json, logs, layers, instances
	CacheDir   string // the base image cache
	ConfigPath string // lab file; "" for defaults
}

// Default directories, overridden by LATENTLAB_STATE and LATENTLAB_CACHE.
const (
	DefaultStateDir = "/var/lib/latentlab"
	DefaultCacheDir = "/var/cache/latentlab"
)

// DefaultOptions reads the environment.
func DefaultOptions() Options {
	o := Options{StateDir: DefaultStateDir, CacheDir: DefaultCacheDir, ConfigPath: os.Getenv("LATENTLAB_CONFIG")}
	if v := os.Getenv("LATENTLAB_STATE"); v != "" {
		o.StateDir = v
	}
	if v := os.Getenv("LATENTLAB_CACHE"); v != "" {
		o.CacheDir = v
	}
	return o
}

// State is what a running lab records in lab.json, for `env`, `status` and
// for `down` to find everything again, also after a crash.
type State struct {
	PID        int       `json:"pid"`
	PIDStart   uint64    `json:"pid_start"`
	Started    time.Time `json:"started"`
	Ready      bool      `json:"ready"`
	Endpoint   string    `json:"endpoint"`
	Region     string    `json:"region"`
	Addresses  string    `json:"addresses"`
	MotoURL    string    `json:"moto_url,omitempty"`
	MotoPID    int       `json:"moto_pid,omitempty"`
	MotoStart  uint64    `json:"moto_pid_start,omitempty"`
	MasterURL  string    `json:"master_url,omitempty"`
	MasterPB   string    `json:"master_pb,omitempty"`
	MasterPID  int       `json:"master_pid,omitempty"`
	MasterPIDS uint64    `json:"master_pid_start,omitempty"`
	// CPythonGit is the URL of the lab's CPython repository
	// (lab/cpythonsrc), which instances clone; CPythonBranch its branch.
	CPythonGit    string `json:"cpython_git,omitempty"`
	CPythonBranch string `json:"cpython_branch,omitempty"`
	StateDir      string `json:"state_dir"`
	RequestLog    string `json:"request_log"`
	// Transitions is the file of every state change of the lab's
	// instances and images, when it happened (ReadTransitions).
	Transitions string `json:"transitions,omitempty"`
	// The key the lab's clients use: the dummy one, or with IAM
	// enforcement the lab administrator's (lab.json is 0600).
	AccessKeyID     string `json:"access_key_id,omitempty"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	IAMEnforcement  bool   `json:"iam_enforcement,omitempty"`
}

// Credentials returns the key that works in this lab.
func (s State) Credentials() aws.Credentials {
	if s.AccessKeyID == "" {
		return aws.Credentials{AccessKeyID: DummyAccessKeyID, SecretAccessKey: DummySecretAccessKey}
	}
	return aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey}
}

func statePath(dir string) string { return filepath.Join(dir, "lab.json") }

// ReadState reads a lab's state file.
func ReadState(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

func writeState(dir string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(dir))
}

// Serve runs the lab in the foreground until ctx ends, then takes it all
// down. `latentlab up` runs it as a detached daemon.
func Serve(ctx context.Context, o Options, log io.Writer) (err error) {
	cfg, err := LoadConfig(o.ConfigPath)
	if err != nil {
		return err
	}
	// Files the lab makes for guests (upper layers, captured images) must
	// not depend on the umask of whoever ran `latentlab up`.
	syscall.Umask(0o022)
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(log, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
	}
	for _, name := range cfg.Images {
		if _, err := image.EnsureBase(ctx, o.CacheDir, name, log); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return err
	}
	// Whatever a crashed lab left in this state directory goes first.
	if err := reap(o.StateDir); err != nil {
		return err
	}
	st := State{PID: os.Getpid(), PIDStart: procStart(os.Getpid()), Started: time.Now().UTC(),
		Region: DefaultRegion, Addresses: cfg.Addresses, StateDir: o.StateDir,
		RequestLog: filepath.Join(o.StateDir, "requests.log"), Transitions: filepath.Join(o.StateDir, "transitions.log")}
	if err := writeState(o.StateDir, st); err != nil {
		return err
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		if rerr := reap(o.StateDir); rerr != nil {
			err = errors.Join(err, rerr)
		}
		_ = os.Remove(statePath(o.StateDir))
		logf("lab down")
	}()

	amis := make([]moto.AMI, 0)
	for _, e := range catalogue() {
		amis = append(amis, e.AMI)
	}
	var motoEnv []string
	if a := cfg.Realism.AccountID; a != "" {
		motoEnv = append(motoEnv, "MOTO_ACCOUNT_ID="+a)
	}
	ms, err := moto.Start(ctx, filepath.Join(o.StateDir, "moto"), 0, amis, motoEnv...)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, ms.Stop)
	st.MotoURL, st.MotoPID, st.MotoStart = ms.URL, ms.PID(), procStart(ms.PID())
	if err := writeState(o.StateDir, st); err != nil {
		return err
	}
	logf("moto at %s (pid %d)", ms.URL, ms.PID())
	if cfg.IAMEnforcement {
		creds, err := ms.EnforceIAM(ctx)
		if err != nil {
			return err
		}
		st.AccessKeyID, st.SecretAccessKey, st.IAMEnforcement = creds.AccessKeyID, creds.SecretAccessKey, true
		if err := writeState(o.StateDir, st); err != nil {
			return err
		}
		logf("IAM enforcement on: requests are checked against the policies of their key; the lab's key is %s's %s", moto.AdminUser, creds.AccessKeyID)
	}
	creds := st.Credentials()

	client := ec2.New(ec2.Options{
		Region:       DefaultRegion,
		BaseEndpoint: aws.String(ms.URL),
		Credentials:  credentials.StaticCredentialsProvider{Value: creds},
	})
	aptProxy, pipIndex := "", ""
	if cfg.AptCache != "off" {
		apt, err := aptcache.New(filepath.Join(o.CacheDir, "apt"), logf)
		if err != nil {
			return err
		}
		// Every release's archives: guests of each release install through it.
		apt.Allow(append(append([]string(nil), aptcache.DefaultUpstreams...), image.ArchiveHosts()...)...)
		ln, err := aptcache.Listen(cfg.AptCache)
		if err != nil {
			return fmt.Errorf("apt cache: listen on %s: %w (set apt_cache in the lab file)", cfg.AptCache, err)
		}
		aptProxy = serveHelper("apt cache", filepath.Join(o.CacheDir, "apt"), ln, apt.Serve, func() string { return apt.Stats().String() }, logf, &cleanups)
	}
	if cfg.PyPICache != "off" {
		pypi, err := pypicache.New(filepath.Join(o.CacheDir, "pypi"), logf)
		if err != nil {
			return err
		}
		ln, err := pypicache.Listen(cfg.PyPICache)
		if err != nil {
			return fmt.Errorf("%w (set pypi_cache in the lab file)", err)
		}
		pipIndex = serveHelper("pypi cache", filepath.Join(o.CacheDir, "pypi"), ln, pypi.Serve, pypi.Stats, logf, &cleanups)
	}
	var cpython *master.CPythonBuilder
	if cfg.CPythonGit != "off" {
		repo, err := cpythonsrc.Ensure(ctx, o.CacheDir, log)
		if err != nil {
			return fmt.Errorf("the CPython repository: %w (cpython_git = \"off\" in the lab file goes without)", err)
		}
		h, err := cpythonsrc.Handler(cpythonsrc.Root(o.CacheDir))
		if err != nil {
			return err
		}
		ln, err := loopback.Listen("cpython git", cfg.CPythonGit, DefaultCPythonGit)
		if err != nil {
			return fmt.Errorf("%w (set cpython_git in the lab file)", err)
		}
		var served atomic.Int64
		serve := func(ctx context.Context, ln net.Listener) error {
			return loopback.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				served.Add(1)
				h.ServeHTTP(w, r)
			}), "cpython git")
		}
		addr := serveHelper("cpython git", repo.Dir, ln, serve, func() string {
			return fmt.Sprintf("%d requests", served.Load())
		}, logf, &cleanups)
		st.CPythonGit, st.CPythonBranch = "http://"+addr+"/"+cpythonsrc.RepoName, repo.Branch
		cpython = &master.CPythonBuilder{Repo: st.CPythonGit, Branch: repo.Branch, Tests: cfg.Master.CPythonTests}
		logf("CPython %s (branch %s) at %s", repo.Version, repo.Branch, st.CPythonGit)
	}
	kmsClient := kms.New(kms.Options{
		Region:       DefaultRegion,
		BaseEndpoint: aws.String(ms.URL),
		Credentials:  credentials.StaticCredentialsProvider{Value: creds},
	})
	fl, err := newFleet(ctx, o.StateDir, o.CacheDir, client, kmsClient, cfg, logf)
	if err != nil {
		return err
	}
	fl.aptProxy = aptProxy
	fl.pipIndex = pipIndex
	if fl.transitions, err = openTransitions(st.Transitions); err != nil {
		return err
	}
	cleanups = append(cleanups, fl.shutdown, fl.transitions.close)

	reqLog, err := ec2front.OpenLog(st.RequestLog)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { reqLog.Close() })
	front := ec2front.New(ms.URL, fl, reqLog)
	front.Credentials = creds
	front.Enforcing = cfg.IAMEnforcement
	// The IAM evaluator answers iam:SimulatePrincipalPolicy (moto has
	// none) and, with IAM enforcement, decides the requests of keys other
	// than the lab's, with conditions and resource ARNs (moto checks
	// actions only).
	dir, err := iameval.Install(ctx, o.CacheDir)
	if err != nil {
		return err
	}
	ev, err := iameval.Start(dir)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, ev.Close)
	front.Evaluator = ev
	logf("IAM evaluator (pid %d) in %s", ev.PID(), dir)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("EC2 endpoint: listen on %s: %w (is another lab up? set listen in the lab file)", cfg.Listen, err)
	}
	srv := &http.Server{Handler: endpointHandler(cfg, front, logf), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	cleanups = append(cleanups, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	st.Endpoint = "http://" + ln.Addr().String()
	logf("EC2 endpoint at %s", st.Endpoint)
	warmed := warmMoto(ctx, client, logf) // meanwhile the master starts

	if cfg.MasterEnabled() {
		workers, err := cfg.masterWorkers()
		if err != nil {
			return err
		}
		if len(workers) == 0 && len(cfg.Master.ExtraWorkers) == 0 {
			// A builder needs a worker: a default one with a fresh
			// password, readable by root only.
			w, err := defaultWorker(o.StateDir)
			if err != nil {
				return err
			}
			workers = append(workers, w)
		}
		flavour := master.Debian()
		if v := cfg.Master.Buildbot; v != "" && v != "debian" {
			root, err := master.PipRoot(ctx, o.CacheDir, log)
			if err != nil {
				return fmt.Errorf("buildbot master %s: %w", v, err)
			}
			if flavour, err = master.EnsurePip(ctx, o.CacheDir, root, v, log); err != nil {
				return fmt.Errorf("buildbot master %s: %w", v, err)
			}
		}
		m, err := master.Start(ctx, master.Config{
			Flavour:          flavour,
			Dir:              filepath.Join(o.StateDir, "master"),
			PBPort:           cfg.Master.PBPort,
			WWWPort:          cfg.Master.WWWPort,
			Workers:          workers,
			Extra:            cfg.Master.Extra,
			ExtraWorkerNames: cfg.Master.ExtraWorkers,
			Env:              labEnv(st),
			AWSEndpoint:      st.Endpoint,
			CPython:          cpython,
		})
		if err != nil {
			return fmt.Errorf("buildbot master: %w", err)
		}
		cleanups = append(cleanups, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = m.Stop(sctx)
		})
		st.MasterURL, st.MasterPB, st.MasterPID, st.MasterPIDS = m.URL(), m.PBAddr(), m.PID(), procStart(m.PID())
		logf("buildbot master (%s) at %s, workers connect to %s (pid %d)", flavour.Name, m.URL(), m.PBAddr(), m.PID())
	}
	if err := <-warmed; err != nil {
		return err
	}
	st.Ready = true
	if err := writeState(o.StateDir, st); err != nil {
		return err
	}
	logf("lab ready")
	<-ctx.Done()
	logf("lab going down: %v", context.Cause(ctx))
	return nil
}

// labEnv is the environment that points AWS clients at the lab.
func labEnv(st State) []string {
	creds := st.Credentials()
	return []string{
		"AWS_ENDPOINT_URL=" + st.Endpoint,
		"AWS_REGION=" + DefaultRegion,
		"AWS_DEFAULT_REGION=" + DefaultRegion,
		"AWS_ACCESS_KEY_ID=" + creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + creds.SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// reap removes every trace of machines under the state directory: processes
// rooted there, mounts, nspawn propagation directories, instance and layer
// directories. It is safe to run on a clean directory.
func reap(stateDir string) error {
	if old, err := ReadState(stateDir); err == nil {
		killRecorded(old.MasterPID, old.MasterPIDS)
		killRecorded(old.MotoPID, old.MotoStart)
	}
	var names []string
	ids, _ := filepath.Glob(filepath.Join(stateDir, "i", "*"))
	for _, d := range ids {
		names = append(names, MachineName(filepath.Base(d)))
	}
	err := machine.Reap(stateDir, names)
	for _, sub := range []string{"i", "l", "moto", "master", DefaultWorkerPasswordFile} {
		if rerr := os.RemoveAll(filepath.Join(stateDir, sub)); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// DefaultWorkerName is the worker the lab's master accepts when the lab file
// names none; its password is in DefaultWorkerPasswordFile in the state dir.
const (
	DefaultWorkerName         = "lab-worker"
	DefaultWorkerPasswordFile = "lab-worker.password"
)

func defaultWorker(stateDir string) (master.Worker, error) {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return master.Worker{}, err
	}
	pw := base64.RawURLEncoding.EncodeToString(b[:])
	if err := os.WriteFile(filepath.Join(stateDir, DefaultWorkerPasswordFile), []byte(pw+"\n"), 0o600); err != nil {
		return master.Worker{}, err
	}
	return master.Worker{Name: DefaultWorkerName, Password: pw}, nil
}

// serveHelper runs a loopback helper (the apt cache, the PyPI mirror) on ln
// until the lab stops, when a cleanup stops it and logs its stats; it
// returns the address instances reach it at.
func serveHelper(what, dir string, ln net.Listener, serve func(context.Context, net.Listener) error, stats func() string,
	logf func(string, ...any), cleanups *[]func()) string {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = serve(ctx, ln); close(done) }()
	*cleanups = append(*cleanups, func() {
		stop()
		<-done
		logf("%s: %s", what, stats())
	})
	logf("%s at %s (%s)", what, ln.Addr(), dir)
	return ln.Addr().String()
}
