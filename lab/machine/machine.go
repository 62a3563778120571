// Package machine gives a lab instance its body: an overlayfs root made of
// image layers plus the instance's own upper layer, booted with systemd-nspawn
// (real systemd, or sysvinit where the image has it instead; real services,
// real reboots), and supervised so that a guest reboot boots it again and a
// guest poweroff ends as stopped.
//
// It owns mounts, the nspawn process, the console log and the cloud-init-like
// preparation of the upper layer (address, hostname, host keys, the key pair's
// public key). It does not know about EC2 or moto: the lab maps instance IDs
// and states onto machines.
package machine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/lab/aptcache"
	"github.com/latentworker/latentworker/lab/pypicache"
)

// State is the life-cycle state of a machine, as the lab sees it.
type State string

// Machine states. They map one to one onto EC2 instance states.
const (
	Pending      State = "pending"       // booting, sshd not answering yet
	Running      State = "running"       // sshd answers
	Stopping     State = "stopping"      // shutting down after a stop request or a guest poweroff
	Stopped      State = "stopped"       // no container, upper layer kept
	ShuttingDown State = "shutting-down" // being terminated
	Terminated   State = "terminated"    // gone: no container, no mount, no directory
)

// exitReboot is systemd-nspawn's exit status when the guest rebooted.
const exitReboot = 133

// sigRebootSystemd is SIGRTMIN+5 (glibc's SIGRTMIN is 34): systemd as PID 1
// starts reboot.target on it.
const sigRebootSystemd = syscall.Signal(34 + 5)

// Spec describes one machine.
type Spec struct {
	ID       string     // instance ID, e.g. i-0123...
	Name     string     // nspawn machine name (short, unique on the host)
	Dir      string     // per-machine directory: u (upper), w (work), m (merged), console.log
	Layers   []string   // lower directories, newest first; the last is the base rootfs
	Addr     netip.Addr // loopback address the guest's sshd listens on
	User     string     // the image's default user, e.g. admin
	AuthKey  string     // public key (authorized_keys line) of the launch key pair; may be empty
	Hostname string
	// AptProxy is the loopback host:port of the lab's apt cache; apt in
	// the guest uses it for its release's archives. Empty: none.
	AptProxy string
	// PipIndex is the loopback host:port of the lab's PyPI mirror; pip in
	// the instance uses it (/etc/pip.conf). Empty: none.
	PipIndex string
	// OnExit is called (from the supervisor goroutine) when the guest powered
	// itself off, i.e. the machine stopped without a Stop call.
	OnGuestPoweroff func()
	// Base, when set, gives the lowest layer (the base rootfs), appended to
	// Layers at the first Start: the machine is pending while it runs
	// (building a base image takes minutes), and a Stop or Terminate
	// cancels its context. If it fails, the machine ends stopped and
	// OnBaseFailure is called with the error.
	Base          func(ctx context.Context) (string, error)
	OnBaseFailure func(error)
	// OnEvent, when set, is told every state change (the new state's
	// name) and "ssh-up" each time a boot's sshd first answers, as it
	// happens. It is called with the machine's lock held: it must not call
	// the machine.
	OnEvent func(event string)
}

// Machine is a supervised nspawn container.
type Machine struct {
	spec Spec
	// seen is state, for readers that must not wait for mu (State).
	seen atomic.Value

	mu        sync.Mutex
	state     State
	cmd       *exec.Cmd
	done      chan struct{} // closed when the supervisor exits
	stopReq   bool
	prepared  bool
	mounted   bool
	hostKeys  []string // public host keys, authorized_keys format
	bootCount int
	// otherInit: the current boot's init is not systemd (sysvinit, as
	// Debian's sysvinit-core and openrc packages boot): it takes its
	// requests through telinit, not signals (see initRequest).
	otherInit bool
	baseReady bool               // Spec.Layers holds the base (always, without Spec.Base)
	baseStop  context.CancelFunc // cancels a Spec.Base in progress
	changed   chan struct{}      // closed and replaced on every state change
	holds     sync.WaitGroup     // Hold: readers of the upper directory
}

// New returns a machine in the stopped state; call Start to boot it.
func New(spec Spec) *Machine {
	spec.Layers = append([]string(nil), spec.Layers...)
	return &Machine{spec: spec, state: Stopped, changed: make(chan struct{}), baseReady: spec.Base == nil}
}

// Spec returns the machine's spec.
func (m *Machine) Spec() Spec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.spec
}

// Layers returns the machine's lower layers, newest first, and whether they
// are complete: false while the base is still to come from Spec.Base.
func (m *Machine) Layers() ([]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.spec.Layers...), m.baseReady
}

// Paths of the overlay parts inside Spec.Dir.
func (m *Machine) upper() string  { return filepath.Join(m.spec.Dir, "u") }
func (m *Machine) work() string   { return filepath.Join(m.spec.Dir, "w") }
func (m *Machine) merged() string { return filepath.Join(m.spec.Dir, "m") }

// UpperDir is the machine's own layer (what an image capture copies).
func (m *Machine) UpperDir() string { return m.upper() }

// ConsolePath is the file the container's console is written to.
func (m *Machine) ConsolePath() string { return filepath.Join(m.spec.Dir, "console.log") }

// State returns the current state. It never waits for the machine's lock,
// which Start and Terminate hold across slow work (host keys, unmounting,
// deleting the upper layer): the EC2 endpoint reads every instance's state
// on every DescribeInstances.
func (m *Machine) State() State {
	if s, ok := m.seen.Load().(State); ok {
		return s
	}
	return Stopped // as New makes it
}

// Changed returns a channel closed at the next state change.
func (m *Machine) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

func (m *Machine) setState(s State) {
	// m.mu held
	if m.state == s {
		return
	}
	m.state = s
	m.seen.Store(s)
	close(m.changed)
	m.changed = make(chan struct{})
	if m.spec.OnEvent != nil {
		m.spec.OnEvent(string(s))
	}
}

// WaitState waits until the machine is in one of the given states.
func (m *Machine) WaitState(ctx context.Context, states ...State) error {
	for {
		m.mu.Lock()
		cur, ch := m.state, m.changed
		m.mu.Unlock()
		for _, s := range states {
			if cur == s {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("machine %s: waiting for %v (now %s): %w", m.spec.ID, states, cur, ctx.Err())
		case <-ch:
		}
	}
}

// HostKeys returns the guest's public SSH host keys (authorized_keys format).
func (m *Machine) HostKeys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.hostKeys...)
}

// mount mounts the overlay if it is not mounted yet.
func (m *Machine) mount() error {
	if m.mounted {
		return nil
	}
	for _, d := range []string{m.upper(), m.work(), m.merged()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		// The upper directory's mode becomes the guest's / : exactly 0755,
		// whatever the umask (with 0700 no user could reach its home).
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		strings.Join(m.spec.Layers, ":"), m.upper(), m.work())
	if len(opts) >= 4000 {
		return fmt.Errorf("machine %s: overlay options are %d bytes, over mount's limit: flatten the image chain", m.spec.ID, len(opts))
	}
	if err := syscall.Mount("overlay", m.merged(), "overlay", 0, opts); err != nil {
		return fmt.Errorf("machine %s: mount overlay on %s: %w", m.spec.ID, m.merged(), err)
	}
	m.mounted = true
	return nil
}

// prepare does, once per machine, what cloud-init does on an instance's
// first boot: address, hostname, fresh host keys, the launch key.
func (m *Machine) prepare() error {
	if m.prepared {
		return nil
	}
	root := m.merged()
	write := func(rel, content string, mode os.FileMode) error {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, []byte(content), mode)
	}
	if err := write("etc/ssh/sshd_config.d/latentlab.conf",
		"# written by latentlab: this instance's address\nListenAddress "+m.spec.Addr.String()+":22\n", 0o644); err != nil {
		return fmt.Errorf("machine %s: sshd listen address: %w", m.spec.ID, err)
	}
	if err := write("etc/hostname", m.spec.Hostname+"\n", 0o644); err != nil {
		return err
	}
	if err := write("etc/hosts", HostsFile(m.spec.Addr, m.spec.Hostname), 0o644); err != nil {
		return err
	}
	if m.spec.AptProxy != "" {
		if err := write(aptcache.AptConfPath, aptcache.AptConf(m.spec.AptProxy), 0o644); err != nil {
			return fmt.Errorf("machine %s: apt proxy: %w", m.spec.ID, err)
		}
	}
	if m.spec.PipIndex != "" {
		if err := write(pypicache.PipConfPath, pypicache.PipConf(m.spec.PipIndex), 0o644); err != nil {
			return fmt.Errorf("machine %s: pip index: %w", m.spec.ID, err)
		}
	}
	// A fresh identity: machine-id is initialised by systemd at boot.
	if err := write("etc/machine-id", "", 0o444); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(root, "var/lib/dbus/machine-id"))
	if err := m.generateHostKeys(root); err != nil {
		return err
	}
	if m.spec.AuthKey != "" {
		if err := authorizeKey(root, m.spec.User, m.spec.AuthKey); err != nil {
			return fmt.Errorf("machine %s: authorize launch key: %w", m.spec.ID, err)
		}
	}
	m.prepared = true
	return nil
}

// HostsFile is the /etc/hosts the lab writes for an instance.
func HostsFile(addr netip.Addr, hostname string) string {
	return "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		addr.String() + "\t" + hostname + "\t# latentlab\n"
}

func (m *Machine) generateHostKeys(root string) error {
	sshDir := filepath.Join(root, "etc/ssh")
	matches, _ := filepath.Glob(filepath.Join(sshDir, "ssh_host_*"))
	for _, f := range matches {
		_ = os.Remove(f)
	}
	out, err := exec.Command("ssh-keygen", "-q", "-A", "-f", root).CombinedOutput()
	if err != nil {
		return fmt.Errorf("machine %s: ssh-keygen -A: %v: %s", m.spec.ID, err, out)
	}
	pubs, _ := filepath.Glob(filepath.Join(sshDir, "ssh_host_*_key.pub"))
	var keys []string
	for _, p := range pubs {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		keys = append(keys, strings.TrimSpace(string(b)))
	}
	if len(keys) == 0 {
		return fmt.Errorf("machine %s: no host keys generated", m.spec.ID)
	}
	m.hostKeys = keys
	return nil
}

// authorizeKey appends key to user's authorized_keys in the guest root, as
// cloud-init does, unless it is there already.
func authorizeKey(root, user, key string) error {
	uid, gid, home, err := lookupUser(root, user)
	if err != nil {
		return err
	}
	sshDir := filepath.Join(root, home, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return err
	}
	ak := filepath.Join(sshDir, "authorized_keys")
	existing, err := os.ReadFile(ak)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	key = strings.TrimSpace(key)
	for _, line := range strings.Split(string(existing), "\n") {
		if strings.TrimSpace(line) == key {
			return nil
		}
	}
	if len(existing) > 0 && !bytes.HasSuffix(existing, []byte("\n")) {
		existing = append(existing, '\n')
	}
	if err := os.WriteFile(ak, append(existing, key+"\n"...), 0o600); err != nil {
		return err
	}
	for _, p := range []string{sshDir, ak} {
		if err := os.Lchown(p, uid, gid); err != nil {
			return err
		}
	}
	return os.Chmod(sshDir, 0o700)
}

// lookupUser reads the guest's /etc/passwd.
func lookupUser(root, user string) (uid, gid int, home string, err error) {
	f, err := os.Open(filepath.Join(root, "etc/passwd"))
	if err != nil {
		return 0, 0, "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 6 && fields[0] == user {
			uid, _ = strconv.Atoi(fields[2])
			gid, _ = strconv.Atoi(fields[3])
			return uid, gid, fields[5], nil
		}
	}
	return 0, 0, "", fmt.Errorf("user %q not in the image's /etc/passwd", user)
}

// Start mounts, prepares (first time only) and boots the machine. It returns
// at once, Pending: the first time, the base, the overlay and the
// preparation follow in the background (a failure there ends the machine
// stopped and calls Spec.OnBaseFailure); later, once the overlay is
// mounted. The state is Pending until sshd answers, then Running.
func (m *Machine) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.state {
	case Pending, Running:
		return nil
	case Stopped:
	default:
		return fmt.Errorf("machine %s: cannot start in state %s", m.spec.ID, m.state)
	}
	if !m.baseReady || !m.prepared {
		// The first boot: the base, the overlay and what cloud-init
		// does (host keys: ssh-keygen takes a while) happen after Start
		// returns, as EC2 answers RunInstances with a pending instance
		// at once.
		ctx, cancel := context.WithCancel(context.Background())
		m.baseStop = cancel
		m.stopReq = false
		m.setState(Pending)
		m.done = make(chan struct{})
		go m.awaitBase(ctx, m.done)
		return nil
	}
	if err := m.mount(); err != nil {
		return err
	}
	m.stopReq = false
	m.setState(Pending)
	m.done = make(chan struct{})
	go m.supervise(m.done)
	return nil
}

// awaitBase gets the base layer from Spec.Base (when the machine has none
// yet), then mounts, prepares and boots the machine, unless it was stopped
// or terminated meanwhile.
func (m *Machine) awaitBase(ctx context.Context, done chan struct{}) {
	m.mu.Lock()
	ready := m.baseReady
	m.mu.Unlock()
	var base string
	var err error
	if !ready {
		base, err = m.spec.Base(ctx)
	}
	m.mu.Lock()
	m.baseStop()
	if err == nil && !m.stopReq {
		if !ready {
			m.spec.Layers = append(m.spec.Layers, base)
			m.baseReady = true
		}
		if err = m.mount(); err == nil {
			err = m.prepare()
		}
	}
	if err != nil || m.stopReq {
		if m.state != ShuttingDown {
			m.setState(Stopped)
		}
		stopped := m.stopReq
		cb := m.spec.OnBaseFailure
		m.mu.Unlock()
		close(done)
		if err != nil && !stopped && cb != nil {
			cb(err)
		}
		return
	}
	m.mu.Unlock()
	m.supervise(done)
}

// supervise boots the container, restarts it after a guest reboot, and
// settles the state when it ends.
func (m *Machine) supervise(done chan struct{}) {
	defer close(done)
	for {
		code, err := m.bootOnce()
		m.mu.Lock()
		stopReq := m.stopReq
		m.mu.Unlock()
		if err == nil && code == exitReboot && !stopReq {
			continue // guest reboot: boot again, state stays running as on EC2
		}
		m.mu.Lock()
		m.cmd = nil
		poweroff := !m.stopReq
		if m.state != ShuttingDown {
			m.setState(Stopped)
		}
		cb := m.spec.OnGuestPoweroff
		m.mu.Unlock()
		if poweroff && cb != nil {
			cb()
		}
		return
	}
}

// bootOnce runs one container boot to its end and returns nspawn's exit code.
func (m *Machine) bootOnce() (int, error) {
	// Append mode for nspawn too: the host key block is appended to the
	// same file, and a plain offset would write over it.
	if err := os.WriteFile(m.ConsolePath(), nil, 0o600); err != nil {
		return -1, err
	}
	console, err := os.OpenFile(m.ConsolePath(), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return -1, err
	}
	defer console.Close()
	otherInit := !systemdInit(m.merged())
	cgroups, err := cgroupDirs(m.spec.Name)
	if err != nil {
		return -1, fmt.Errorf("machine %s: cgroups: %w", m.spec.ID, err)
	}
	procs, err := makeCgroups(cgroups)
	if err != nil {
		return -1, fmt.Errorf("machine %s: %w", m.spec.ID, err)
	}
	defer func() { _ = removeCgroups(cgroups) }()
	// A shell moves itself into the machine's cgroups, then becomes
	// systemd-nspawn, so the container's tree is built there (cgroup.go).
	cmd := exec.Command("/bin/sh", "-c", `for p in $LATENTLAB_CGROUP_PROCS; do echo $$ >"$p" || exit 1; done; exec "$@"`, "sh",
		"systemd-nspawn", "--quiet", "-b",
		"-D", m.merged(), "-M", m.spec.Name,
		"--register=no", "--keep-unit", "--console=read-only",
		"--link-journal=no", "--resolv-conf=off", "--timezone=off")
	cmd.Env = append(os.Environ(), "LATENTLAB_CGROUP_PROCS="+strings.Join(procs, " "))
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.Stdin = nil
	// Its own process group, so the lab's terminal signals do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("machine %s: start systemd-nspawn: %w", m.spec.ID, err)
	}
	m.mu.Lock()
	m.cmd = cmd
	m.bootCount++
	m.otherInit = otherInit
	boot := m.bootCount
	if m.stopReq {
		// Stopped while this boot was being set up: Stop found no
		// container to signal.
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	m.mu.Unlock()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	go m.watchSSH(boot, waitErr)
	err = <-waitErr
	removePropagate(m.spec.Name)
	if otherInit {
		// sysvinit's shutdown remounts the root read-only, which is the
		// overlay's superblock the host's mount shares: writable again,
		// as a new boot of a real disk is.
		_ = syscall.Mount("overlay", m.merged(), "overlay", syscall.MS_REMOUNT, "")
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// watchSSH moves the machine from pending to running once its sshd answers
// with a protocol banner, then prints the host key block on the console as
// cloud-init does.
func (m *Machine) watchSSH(boot int, exited <-chan error) {
	addr := net.JoinHostPort(m.spec.Addr.String(), "22")
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		m.mu.Lock()
		current := m.bootCount == boot && m.cmd != nil
		m.mu.Unlock()
		if !current {
			return
		}
		if SSHAnswers(addr) {
			m.mu.Lock()
			if m.state == Pending {
				m.setState(Running)
			}
			if m.spec.OnEvent != nil {
				m.spec.OnEvent("ssh-up")
			}
			m.mu.Unlock()
			m.appendKeysToConsole()
			return
		}
		<-tick.C
	}
}

// SSHAnswers reports whether an SSH server answers at addr (host:port) with
// its protocol banner: what makes the lab show an instance running.
func SSHAnswers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 8)
	n, _ := io.ReadFull(c, buf)
	return n >= 4 && string(buf[:4]) == "SSH-"
}

// appendKeysToConsole writes the block cloud-init's keys-to-console module
// prints, so clients can pin host keys from GetConsoleOutput.
func (m *Machine) appendKeysToConsole() {
	f, err := os.OpenFile(m.ConsolePath(), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.WriteString(f, HostKeyBlock(m.HostKeys(), m.spec.Hostname))
}

// HostKeyBlock renders cloud-init's fingerprint and key blocks for keys.
func HostKeyBlock(keys []string, hostname string) string {
	var b strings.Builder
	b.WriteString("\nec2: \nec2: #############################################################\n")
	b.WriteString("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n")
	for _, k := range keys {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "ec2: %d %s root@%s (%s)\n", keyBits(pub), ssh.FingerprintSHA256(pub), hostname, keyKind(pub.Type()))
	}
	b.WriteString("ec2: -----END SSH HOST KEY FINGERPRINTS-----\n")
	b.WriteString("ec2: #############################################################\n")
	b.WriteString("-----BEGIN SSH HOST KEY KEYS-----\n")
	for _, k := range keys {
		fields := strings.Fields(k)
		if len(fields) >= 2 {
			fmt.Fprintf(&b, "%s %s root@%s\n", fields[0], fields[1], hostname)
		}
	}
	b.WriteString("-----END SSH HOST KEY KEYS-----\n")
	return b.String()
}

func keyKind(t string) string {
	switch t {
	case ssh.KeyAlgoED25519:
		return "ED25519"
	case ssh.KeyAlgoRSA:
		return "RSA"
	default:
		return "ECDSA"
	}
}

func keyBits(pub ssh.PublicKey) int {
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256:
		return 256
	case ssh.KeyAlgoECDSA384:
		return 384
	case ssh.KeyAlgoECDSA521:
		return 521
	}
	if ck, ok := pub.(ssh.CryptoPublicKey); ok {
		if rk, ok := ck.CryptoPublicKey().(interface{ Size() int }); ok {
			return rk.Size() * 8
		}
	}
	return 0
}

// Reboot reboots the guest: its systemd starts reboot.target (another init
// is asked for runlevel 6), nspawn exits 133 and the supervisor boots it
// again. The state stays running, as on EC2.
func (m *Machine) Reboot() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != Running && m.state != Pending {
		return fmt.Errorf("machine %s: cannot reboot in state %s", m.spec.ID, m.state)
	}
	if !m.baseReady {
		return nil // still waiting for its base: it boots afresh anyway
	}
	if m.otherInit {
		return m.initRequest("6")
	}
	pid := m.initPID()
	if pid <= 0 {
		return fmt.Errorf("machine %s: container init not found", m.spec.ID)
	}
	return syscall.Kill(pid, sigRebootSystemd)
}

// systemdInit reports whether root's /sbin/init is systemd (a link to
// it), rather than sysvinit's or another init.
func systemdInit(root string) bool {
	target, err := os.Readlink(filepath.Join(root, "sbin/init"))
	return err == nil && filepath.Base(target) == "systemd"
}

// initRequest asks an init other than systemd for runlevel level, as the
// guest's own telinit does (through init's /run/initctl): "0" halts, "6"
// reboots. sysvinit ignores the signals systemd takes (SIGRTMIN+3 and +5);
// a real machine's power button and reboot go through acpid and shutdown
// to the same request.
func (m *Machine) initRequest(level string) error {
	pid := m.initPID()
	if pid <= 0 {
		return fmt.Errorf("machine %s: container init not found", m.spec.ID)
	}
	out, err := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--mount", "--pid", "--", "/sbin/telinit", level).CombinedOutput()
	if err != nil {
		return fmt.Errorf("machine %s: telinit %s: %v: %s", m.spec.ID, level, err, bytes.TrimSpace(out))
	}
	return nil
}

// initPID finds the container's PID 1 as seen from the host: the process
// whose root is the merged dir and whose innermost PID is 1.
func (m *Machine) initPID() int {
	pids, _ := ProcessesRootedIn(m.spec.Dir)
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "NSpid:") {
				f := strings.Fields(line)
				if len(f) > 2 && f[len(f)-1] == "1" {
					return pid
				}
			}
		}
	}
	return 0
}

// Stop shuts the guest down cleanly (SIGTERM to nspawn powers the guest off),
// waiting up to timeout before killing it. The upper layer and mount stay.
func (m *Machine) Stop(ctx context.Context, timeout time.Duration) error {
	m.mu.Lock()
	if m.state == Stopped || m.state == Terminated {
		m.mu.Unlock()
		return nil
	}
	m.stopReq = true
	if m.state != ShuttingDown {
		m.setState(Stopping)
	}
	cmd, done, otherInit := m.cmd, m.done, m.otherInit
	if !m.baseReady && m.baseStop != nil {
		m.baseStop() // a machine waiting for its base has nothing to shut down
	}
	m.mu.Unlock()
	// SIGTERM makes nspawn ask systemd to power off; another init is asked
	// for runlevel 0 (SIGTERM still, should it not answer yet).
	if cmd != nil && cmd.Process != nil && (!otherInit || m.initRequest("0") != nil) {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	if done == nil {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	// Hard stop: kill the container's processes, then nspawn.
	KillRootedIn(m.spec.Dir)
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("machine %s: container did not exit after SIGKILL", m.spec.ID)
	}
}

// Hold keeps the machine's files (its upper directory) until release is
// called: Terminate stops the machine at once but deletes them only when
// every hold is released, as an EBS snapshot in progress outlives its
// instance. A machine shutting down or terminated cannot be held.
func (m *Machine) Hold() (release func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == ShuttingDown || m.state == Terminated {
		return nil, false
	}
	m.holds.Add(1)
	var once sync.Once
	return func() { once.Do(m.holds.Done) }, true
}

// Terminate stops the machine, unmounts its overlay and deletes its
// directory once nothing holds it.
func (m *Machine) Terminate(ctx context.Context) error {
	m.mu.Lock()
	if m.state == Terminated {
		m.mu.Unlock()
		return nil
	}
	m.setState(ShuttingDown)
	m.mu.Unlock()
	err := m.Stop(ctx, 20*time.Second)
	m.holds.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mounted {
		if uerr := Unmount(m.merged()); uerr != nil {
			return errors.Join(err, uerr)
		}
		m.mounted = false
	}
	if rerr := os.RemoveAll(m.spec.Dir); rerr != nil {
		return errors.Join(err, rerr)
	}
	m.setState(Terminated)
	return err
}

// BootID reads the guest's current boot ID from the host side.
func (m *Machine) BootID() (string, error) {
	pid := m.initPID()
	if pid <= 0 {
		return "", fmt.Errorf("machine %s: not running", m.spec.ID)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/proc/sys/kernel/random/boot_id", pid))
	return strings.TrimSpace(string(b)), err
}

// removePropagate deletes nspawn's propagation directory for a machine; on a
// host whose /run is not a tmpfs it would otherwise stay behind.
func removePropagate(name string) {
	_ = os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", name))
}

// StopAsync marks the machine stopping now and shuts it down in the
// background; the channel receives Stop's result.
func (m *Machine) StopAsync(timeout time.Duration) <-chan error {
	m.mu.Lock()
	if m.state == Pending || m.state == Running {
		m.setState(Stopping)
	}
	m.mu.Unlock()
	ch := make(chan error, 1)
	go func() { ch <- m.Stop(context.Background(), timeout) }()
	return ch
}

// TerminateAsync marks the machine shutting-down now and terminates it in
// the background; the channel receives Terminate's result.
func (m *Machine) TerminateAsync() <-chan error {
	m.mu.Lock()
	if m.state != Terminated {
		m.setState(ShuttingDown)
	}
	m.mu.Unlock()
	ch := make(chan error, 1)
	go func() { ch <- m.Terminate(context.Background()) }()
	return ch
}

// ErrNotStopped is Rebase's answer for a machine that is not stopped.
var ErrNotStopped = errors.New("the machine is not stopped")

// Rebase makes the stopped machine's own layer a lower layer without copying
// it, as a snapshot shares its volume's blocks: the upper directory moves to
// layer (a new path on the same filesystem) and becomes the machine's newest
// lower layer, under a new upper directory that holds copies of keep (paths
// relative to the root, those present in the layer): what the caller is
// about to change in layer, which the machine must go on seeing as it was.
// The machine sees the same tree before and after; it mounts the new stack
// at its next start. A machine that is not stopped is left as it is
// (ErrNotStopped), and so is one whose move failed; after the move, the
// machine's layers include layer even when an error is returned.
func (m *Machine) Rebase(layer string, keep []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != Stopped || !m.baseReady || !m.prepared {
		return fmt.Errorf("machine %s is %s: %w", m.spec.ID, m.state, ErrNotStopped)
	}
	if m.mounted {
		if err := Unmount(m.merged()); err != nil {
			return fmt.Errorf("machine %s: %w", m.spec.ID, err)
		}
		m.mounted = false
	}
	if err := os.MkdirAll(filepath.Dir(layer), 0o755); err != nil {
		return err
	}
	if err := os.Rename(m.upper(), layer); err != nil {
		return fmt.Errorf("machine %s: move its layer: %w", m.spec.ID, err)
	}
	m.spec.Layers = append([]string{layer}, m.spec.Layers...)
	// The work directory belongs to the old upper: overlayfs wants an
	// empty one beside the new.
	if err := os.RemoveAll(m.work()); err != nil {
		return err
	}
	if err := os.Mkdir(m.upper(), 0o755); err != nil {
		return err
	}
	for _, rel := range keep {
		if err := copyOver(layer, m.upper(), rel); err != nil {
			return fmt.Errorf("machine %s: keep %s: %w", m.spec.ID, rel, err)
		}
	}
	return nil
}

// copyOver copies path rel from layer src to layer dst, with its owner,
// mode and extended attributes (an overlay whiteout or opaque directory
// stays one). Missing parent directories are made in dst with the owner and
// mode of src's but without their extended attributes: a parent directory
// marked opaque would hide everything below it in the lower layers.
func copyOver(src, dst, rel string) error {
	rel = filepath.Clean(rel)
	if _, err := os.Lstat(filepath.Join(src, rel)); err != nil {
		return nil // not in the layer: nothing to keep
	}
	var parents []string // rel's parent directories, outermost first
	for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
		parents = append([]string{d}, parents...)
	}
	for _, p := range parents {
		if _, err := os.Lstat(filepath.Join(dst, p)); err == nil {
			continue
		}
		fi, err := os.Lstat(filepath.Join(src, p))
		if err != nil {
			return err
		}
		if err := os.Mkdir(filepath.Join(dst, p), fi.Mode().Perm()); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(dst, p), fi.Mode().Perm()); err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if err := os.Lchown(filepath.Join(dst, p), int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
	}
	out, err := exec.Command("cp", "-a", "--no-target-directory", "--", filepath.Join(src, rel), filepath.Join(dst, rel)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}
