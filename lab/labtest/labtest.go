// Package labtest starts a private lab for a test: its own state directory,
// endpoint port and loopback range, so test packages can run side by side,
// and `latentlab down` in the test's cleanup. The lab runs as the real
// `latentlab` binary, built once per test process, and is reached like AWS:
// through its endpoint.
package labtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/latentworker/latentworker/lab"
	"github.com/latentworker/latentworker/lab/image"
)

// Tools the lab needs on the host.
var tools = []string{"systemd-nspawn", "debootstrap", "moto_server", "ssh-keygen", "/usr/bin/buildbot", "/usr/bin/buildbot-worker",
	// The lab's CPython repository (lab/cpythonsrc).
	"apt-get", "gpg", "gpgv", "git"}

// Require skips the test under -short (the fast tier starts no lab), and
// when the lab cannot run here (not root, a tool missing), except that it
// fails the test then when CI=true: in CI every component must be there.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a lab: not with -short")
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "the lab needs " + strings.Join(missing, ", ") + " (run .ci/run to install them)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// RequireImage skips the test (fails it when CI=true) unless the lab can
// boot the release name: its base image is cached, or this host can build
// it (debootstrap's script for the suite, the archive's keyring).
func RequireImage(t testing.TB, name string) {
	t.Helper()
	if _, ok := image.Built(cacheDir(), name); ok {
		return
	}
	if err := image.CanBuild(name); err != nil {
		msg := "the lab cannot boot " + name + ": " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/latentlab once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "latentlab-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "latentlab")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/latentworker/latentworker/cmd/latentlab").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build latentlab: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// RemoveBinaries removes what Binary built. Call it from TestMain once the
// package's tests have run.
func RemoveBinaries() {
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}

// Lab is a running private lab.
type Lab struct {
	State   lab.State
	Options lab.Options
	Bin     string
	// Env points AWS clients and latentlab at this lab ("KEY=value").
	Env []string
	AWS aws.Config
}

// Start brings up a private lab. extra is appended to its lab file (TOML:
// e.g. a [master] section with workers); listen and addresses are chosen
// here. The lab is taken down when the test ends.
func Start(t testing.TB, extra string) *Lab {
	t.Helper()
	Require(t)
	bin := Binary(t)
	stateDir, err := os.MkdirTemp("", "latentlab-state-")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	addresses := fmt.Sprintf("127.%d.%d.0/24", 20+rand.IntN(200), rand.IntN(256))
	cfgPath := filepath.Join(stateDir, "lab.toml")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:%d\"\naddresses = %q\napt_cache = \"127.0.0.1:%d\"\npypi_cache = \"127.0.0.1:%d\"\ncpython_git = \"127.0.0.1:%d\"\n%s\n",
		port, addresses, freePort(t), freePort(t), freePort(t), extra)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	o := lab.Options{StateDir: stateDir, CacheDir: cacheDir(), ConfigPath: cfgPath}
	l := &Lab{Options: o, Bin: bin}
	t.Cleanup(func() {
		out, err := l.Run("down")
		if err != nil {
			t.Errorf("latentlab down: %v\n%s", err, out)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(stateDir, "lab.log"))
			t.Logf("lab.log:\n%s", b)
		}
		_ = os.RemoveAll(stateDir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := l.command(ctx, "up")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if _, err := cmd.Output(); err != nil {
		t.Fatalf("latentlab up: %v\n%s", err, stderr.String())
	}
	st, err := lab.ReadState(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	l.State = st
	for _, line := range strings.Split(strings.TrimSpace(lab.Env(st)), "\n") {
		l.Env = append(l.Env, strings.TrimPrefix(line, "export "))
	}
	l.AWS = aws.Config{
		Region:       lab.DefaultRegion,
		Credentials:  credentials.StaticCredentialsProvider{Value: st.Credentials()},
		BaseEndpoint: aws.String(st.Endpoint),
	}
	return l
}

// cacheDir is where tests find (or build) the base image: the same cache as
// `latentlab up` uses, unless LATENTLAB_CACHE says otherwise.
func cacheDir() string {
	if v := os.Getenv("LATENTLAB_CACHE"); v != "" {
		return v
	}
	return lab.DefaultCacheDir
}

func (l *Lab) command(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"--state-dir", l.Options.StateDir, "--cache-dir", l.Options.CacheDir, "--config", l.Options.ConfigPath}, args...)
	return exec.CommandContext(ctx, l.Bin, all...)
}

// Run runs a latentlab command against this lab and returns its output.
func (l *Lab) Run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := l.command(ctx, args...).CombinedOutput()
	return string(out), err
}

// EC2 returns an EC2 client for the lab in region ("" for the default).
func (l *Lab) EC2(region string) *ec2.Client {
	return ec2.NewFromConfig(l.AWS, func(o *ec2.Options) {
		if region != "" {
			o.Region = region
		}
	})
}

// Environ returns os.Environ() with the lab's exports on top, for running
// programs (the AWS CLI, latentworker) against this lab.
func (l *Lab) Environ() []string {
	return append(os.Environ(), l.Env...)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
