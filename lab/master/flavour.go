package master

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/latentworker/latentworker/lab/flock"
	"github.com/latentworker/latentworker/lab/image"
)

// Flavour is which buildbot the master runs and where.
//
// The zero Flavour is Debian's buildbot (DefaultBuildbot, the host's
// Python, the stub www plugin). A pip flavour (EnsurePip) is buildbot and
// boto3 installed with pip from PyPI into a venv, run inside another root
// filesystem (a Debian 13, for its Python 3.13) on the host's network.
type Flavour struct {
	// Name says what it is, e.g. "debian" or "buildbot 4.3.0 on python3.13".
	Name string
	// Buildbot is the buildbot command; inside Root when Root is set.
	Buildbot string
	// Root, when set, is a root filesystem the master runs in with chroot,
	// on the host's network, in a mount namespace of its own: Root is the
	// read-only lower layer of an overlay whose upper layer is a tmpfs, so
	// it is never modified. The master's directory and Binds appear at
	// their own paths inside.
	Root string
	// Binds are host directories that appear at the same path inside Root
	// (the venv).
	Binds []string
	// WWW says buildbot-www is installed: no stub www plugin.
	WWW bool
}

// Debian is the default flavour: Debian's buildbot 3.7 package on the
// host's Python (bookworm: 3.11), with Debian's python3-boto3.
func Debian() Flavour {
	return Flavour{Name: "debian", Buildbot: DefaultBuildbot}
}

// PipVersionRE is what a buildbot version for EnsurePip looks like.
var PipVersionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)

// venvDir is where a pip flavour's venvs live under the cache directory.
const venvDir = "master-venv"

// EnsurePip returns the flavour that runs buildbot version (with
// buildbot-www of the same version and boto3, from PyPI) in a venv made by
// the Python 3 of root, and runs the master inside root. The venv is cached
// under cacheDir, keyed by the buildbot version and the Python version, and
// built once (about 20 s): pip runs inside root (an overlay, so root is not
// modified) with the host's network, DNS and CA bundle. root needs python3
// and the venv module (python3-venv), which is installed in the overlay
// when missing. Progress goes to log.
func EnsurePip(ctx context.Context, cacheDir, root, version string, log io.Writer) (Flavour, error) {
	if !PipVersionRE.MatchString(version) {
		return Flavour{}, fmt.Errorf("buildbot version %q: want X.Y.Z", version)
	}
	if strings.ContainsAny(root, ",:\n") {
		return Flavour{}, fmt.Errorf("root filesystem %q: a path with ',' or ':' cannot be an overlay's lower directory", root)
	}
	py, err := rootPython(root)
	if err != nil {
		return Flavour{}, err
	}
	dir, err := filepath.Abs(filepath.Join(cacheDir, venvDir, "buildbot-"+version+"-"+py))
	if err != nil {
		return Flavour{}, err
	}
	f := Flavour{
		Name:     "buildbot " + version + " on " + py,
		Buildbot: filepath.Join(dir, "bin", "buildbot"),
		Root:     root,
		Binds:    []string{dir},
		WWW:      true,
	}
	done := filepath.Join(dir, ".latentlab-complete")
	if exists(done) {
		return f, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return Flavour{}, err
	}
	unlock, err := flock.Lock(ctx, dir+".lock", nil)
	if err != nil {
		return Flavour{}, err
	}
	defer unlock()
	if exists(done) {
		return f, nil
	}
	// An interrupted build is started again.
	if err := os.RemoveAll(dir); err != nil {
		return Flavour{}, err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return Flavour{}, err
	}
	fmt.Fprintf(log, "latentlab: installing buildbot %s and boto3 with pip into %s (once)\n", version, dir)
	start := time.Now()
	script := `set -e
if ! python3 -c 'import ensurepip' 2>/dev/null; then
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends python3-venv
fi
python3 -m venv "$1"
"$1/bin/pip" install --no-cache-dir --disable-pip-version-check -q "buildbot==$2" "buildbot-www==$2" boto3
"$1/bin/buildbot" --version
`
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PIP_") && !strings.HasPrefix(kv, "PYTHON") && !strings.HasPrefix(kv, "VIRTUAL_ENV=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
	cmd := f.command(ctx, dir, env, "/bin/sh", "-c", script, "sh", dir, version)
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return Flavour{}, fmt.Errorf("install buildbot %s with pip in %s: %w\n%s", version, root, err, tail(out, 30))
	}
	if err := os.WriteFile(done, out, 0o644); err != nil {
		return Flavour{}, err
	}
	fmt.Fprintf(log, "latentlab: buildbot %s installed in %s\n", version, time.Since(start).Round(time.Second))
	return f, nil
}

// rootPython returns the name of root's python3, e.g. "python3.13".
func rootPython(root string) (string, error) {
	target, err := os.Readlink(filepath.Join(root, "usr", "bin", "python3"))
	if err != nil {
		return "", fmt.Errorf("root filesystem %s has no python3: %w", root, err)
	}
	py := filepath.Base(target)
	if !regexp.MustCompile(`^python3\.[0-9]+$`).MatchString(py) {
		return "", fmt.Errorf("root filesystem %s: python3 is %s, not python3.N", root, target)
	}
	return py, nil
}

// rootScript runs "$@" chrooted into an overlay of the root filesystem $1
// (upper layer: a tmpfs on the empty directory $2), with the host
// directories before "--" at their own paths inside, /proc, /dev, the
// host's resolv.conf and CA bundle, in the working directory. It runs in a
// mount namespace of its own (Unshareflags), so every mount goes with the
// process, however it ends.
const rootScript = `set -e
root=$1 scratch=$2 wd=$PWD
shift 2
mount -t tmpfs -o mode=0755 latentlab-master "$scratch"
# Relative upper and work directories: the option string is split at
# commas, which a test's directory may hold.
cd "$scratch"
mkdir upper work root
mount -t overlay -o "lowerdir=$root,upperdir=upper,workdir=work" latentlab-master root
cd "$wd"
r=$scratch/root
while [ "$1" != -- ]; do
	mkdir -p "$r$1"
	mount --bind "$1" "$r$1"
	shift
done
shift
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
rm -f "$r/etc/resolv.conf"
cp /etc/resolv.conf "$r/etc/resolv.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
	mkdir -p "$r/etc/ssl/certs"
	rm -f "$r/etc/ssl/certs/ca-certificates.crt"
	cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
fi
exec chroot "$r" /usr/bin/env -C "$wd" "$@"
`

// scratchDir is the directory under the master's (or venv's) directory
// that the root's overlay is mounted on, in the process's own namespace.
const scratchDir = ".root"

// command returns the command that runs name with args for this flavour,
// in dir (which exists), with the environment env. It is in its own
// process group and killed if this thread dies.
func (f Flavour) command(ctx context.Context, dir string, env []string, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if f.Root == "" {
		cmd = exec.CommandContext(ctx, name, args...)
	} else {
		scratch := filepath.Join(dir, scratchDir)
		sh := []string{"-c", rootScript, "sh", f.Root, scratch}
		if !underAny(dir, f.Binds) {
			sh = append(sh, dir)
		}
		sh = append(sh, f.Binds...)
		sh = append(sh, "--", name)
		cmd = exec.CommandContext(ctx, "/bin/sh", append(sh, args...)...)
		attr.Unshareflags = syscall.CLONE_NEWNS
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		// The tmpfs needs an empty directory to mount on.
		_ = os.MkdirAll(scratch, 0o700)
	}
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = attr
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// underAny reports whether dir is one of dirs or below one.
func underAny(dir string, dirs []string) bool {
	for _, d := range dirs {
		if dir == d || strings.HasPrefix(dir, d+"/") {
			return true
		}
	}
	return false
}

// PipRootRelease is the lab image release pip flavours run in: Debian 13
// (trixie), for its Python 3.13, as CPython's master needs.
const PipRootRelease = "debian-13"

// PipRoot returns the root filesystem pip flavours run in: the lab's
// Debian 13 base image (image.EnsureBase), built once in cacheDir. It is
// only ever a read-only lower layer of the master's overlay.
func PipRoot(ctx context.Context, cacheDir string, log io.Writer) (string, error) {
	return image.EnsureBase(ctx, cacheDir, PipRootRelease, log)
}

// Checkconfig runs `buildbot checkconfig dir` with this flavour (in its
// root filesystem, if any) and the environment env, and returns its output.
// An error means the configuration was refused or could not be checked.
func (f Flavour) Checkconfig(ctx context.Context, dir string, env []string) ([]byte, error) {
	bb := f.Buildbot
	if bb == "" {
		bb = DefaultBuildbot
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	cmd := f.command(ctx, dir, env, bb, "checkconfig", dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("buildbot checkconfig %s (%s): %w", dir, f.Name, err)
	}
	return out, nil
}
