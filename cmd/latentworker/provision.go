package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/provision"
)

type provisionOptions struct {
	cf             *configFlags
	sshKey         string
	knownHosts     []string
	hostKey        string
	updates        bool
	reboot         bool
	stdout, stderr io.Writer
}

func newProvision() *cobra.Command {
	o := &provisionOptions{stdout: os.Stdout, stderr: os.Stderr}
	cmd := &cobra.Command{
		Use:   "provision [USER@]HOST[:PORT]",
		Short: "Set up the guide's conventional buildbot worker on any machine reachable over SSH",
		Long: `provision sets the configured worker up on a machine you reach over SSH (a
server, a VM, anything: not only EC2) with the same platform scripts bake
uses: the distribution's buildbot-worker package (or pip), create-worker,
info/admin, info/host, keepalive = 60, delete_leftover_dirs = 1, the service
enabled at boot; then it verifies all of it. --updates applies every pending
update and reboots until none is pending; --reboot reboots once. After a
reboot the worker's service must come up on its own.

Run it again to change the master, the password or the info files: it
converges. The login user (default image.ssh_user, else the platform's)
needs passwordless sudo. The host key is checked against --known-hosts
(default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts; the server is
asked for a key of a type listed there) or --host-key SHA256:... (the
server is asked for each key type it has); an unknown key is refused. The
key is --ssh-key (mode 0600 or stricter, as OpenSSH requires), else the
SSH agent (SSH_AUTH_SOCK), else ~/.ssh/id_ed25519. HOST may be an IPv6
address in brackets ([2001:db8::7]:2222). The first connection is given up
after a minute. The worker password travels only on the scripts' stdin.

` + exitCodesHelp,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return badInput{fmt.Errorf("latentworker provision takes one argument, [USER@]HOST[:PORT]; got %d", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runProvision(cmd.Context(), o, args[0])
		},
	}
	o.cf = addConfigFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.sshKey, "ssh-key", "", "private key file to log in with (default: the SSH agent, else ~/.ssh/id_ed25519)")
	f.StringArrayVar(&o.knownHosts, "known-hosts", nil, "known_hosts file to check the host key against (repeatable; default ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts)")
	f.StringVar(&o.hostKey, "host-key", "", "the host key's SHA256 fingerprint (SHA256:...), instead of known_hosts")
	f.BoolVar(&o.updates, "updates", false, "apply every pending update, then reboot until none is pending")
	f.BoolVar(&o.reboot, "reboot", false, "reboot once (without updates) and check the worker comes up on its own")
	return cmd
}

var fingerprintRE = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)

// parseHost splits [USER@]HOST[:PORT] (an IPv6 address in brackets, as
// [::1] or [::1]:2222, or bare) and checks each part; the user is checked
// as p's login user (Windows: Administrator).
func parseHost(arg string, p *platform.Platform, defUser string) (user, addr string, err error) {
	user, hostPort, found := strings.Cut(arg, "@")
	if !found {
		user, hostPort = defUser, arg
	}
	if rule := config.CheckLoginUser(p, user); rule != "" {
		return "", "", fmt.Errorf("HOST %q: the user %q must be %s", arg, user, rule)
	}
	host, port := hostPort, strconv.Itoa(p.SSHPort)
	switch {
	case strings.HasPrefix(hostPort, "[") && strings.HasSuffix(hostPort, "]"):
		host = hostPort[1 : len(hostPort)-1]
	case strings.HasPrefix(hostPort, "["):
		h, pt, err := net.SplitHostPort(hostPort)
		if err != nil {
			return "", "", fmt.Errorf("HOST %q: %q is not [IPv6 address] or [IPv6 address]:port", arg, hostPort)
		}
		host, port = h, pt
	case strings.Count(hostPort, ":") > 1:
		// A bare IPv6 address: no port.
	case strings.Contains(hostPort, ":"):
		host, port, _ = strings.Cut(hostPort, ":")
	}
	if n, err := strconv.Atoi(port); !portRE.MatchString(port) || err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("HOST %q: the port %q must be a number from 1 to 65535", arg, port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", "", fmt.Errorf("HOST %q: %q: an address with a zone is not supported", arg, host)
		}
	} else if strings.Contains(host, ":") || !hostNameRE.MatchString(host) {
		return "", "", fmt.Errorf("HOST %q: %q is not a host name or an IP address", arg, host)
	}
	return user, net.JoinHostPort(host, port), nil
}

var (
	portRE     = regexp.MustCompile(`^[0-9]{1,5}$`)
	hostNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$`)
)

func runProvision(ctx context.Context, o *provisionOptions, hostArg string) error {
	cfg, err := o.cf.load()
	if err != nil {
		return err
	}
	p, perr := cfg.Image.PlatformInfo()
	verr := cfg.Validate()
	password, pwErr := cfg.Password(promptPassword(o.stderr))
	if err := errors.Join(verr, pwErr); err != nil {
		return badInput{err}
	}
	if perr != nil {
		return badInput{perr}
	}
	user, addr, err := parseHost(hostArg, p, cfg.Image.EffectiveSSHUser())
	if err != nil {
		return badInput{err}
	}
	if o.hostKey != "" && !fingerprintRE.MatchString(o.hostKey) {
		return badInput{fmt.Errorf("--host-key %q: must be a SHA256 fingerprint, SHA256: and 43 base64 characters (ssh-keygen -lf KEY.pub)", o.hostKey)}
	}
	t := provision.Target{Addr: addr, User: user}
	if o.hostKey != "" {
		// A fingerprint does not say the key's type: the server is asked
		// for each type it has until one matches.
		t.HostKey, t.ProbeHostKey = provision.Fingerprint(o.hostKey), true
	} else {
		files := o.knownHosts
		if len(files) == 0 {
			home, _ := os.UserHomeDir()
			files = []string{filepath.Join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"}
		}
		if t.HostKey, t.HostKeyAlgorithms, err = provision.KnownHosts(addr, files...); err != nil {
			return badInput{fmt.Errorf("--known-hosts: %w", err)}
		}
	}
	if err := loginKey(o, &t); err != nil {
		return badInput{err}
	}
	var extra []provision.Script
	for _, path := range cfg.Image.ExtraScripts {
		b, err := os.ReadFile(path)
		if err != nil {
			return badInput{fmt.Errorf("image.extra_scripts: %w", err)}
		}
		extra = append(extra, provision.Script{Name: filepath.Base(path), Content: b})
	}
	w := cfg.ScriptWorker("")
	w.HostInfo = cfg.Worker.HostInfo
	fmt.Fprintf(o.stderr, "latentworker: setting up worker %s on %s@%s (%s)\n", w.Name, user, addr, p.Name)
	res, err := provision.Host(ctx, provision.HostOptions{
		Target: t, Platform: p, Worker: w, Password: password.Reveal(),
		BuildDeps: cfg.Image.CPythonBuildDeps, Packages: cfg.Image.ExtraPackages, Extra: extra, Updates: o.updates, Reboot: o.reboot,
		Progress: o.stderr,
	})
	if err != nil {
		return err
	}
	up, why := res.Facts.ServiceUp()
	fmt.Fprintf(o.stdout, "worker: %s\nhost: %s\nos: %s\nmaster: %s\nservice: %s\nreboots: %d\n", w.Name, addr, res.OSName, w.Master, why, res.Reboots)
	if !up {
		return fmt.Errorf("worker %s on %s: service %s", w.Name, addr, why)
	}
	return nil
}

// loginKey sets t's key: --ssh-key, else the SSH agent, else
// ~/.ssh/id_ed25519.
func loginKey(o *provisionOptions, t *provision.Target) error {
	path := o.sshKey
	if path == "" {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				return fmt.Errorf("SSH_AUTH_SOCK %s: %w (or give --ssh-key)", sock, err)
			}
			t.Signers = agent.NewClient(conn).Signers
			return nil
		}
		home, _ := os.UserHomeDir()
		path = filepath.Join(home, ".ssh", "id_ed25519")
	}
	if err := checkKeyFile(path); err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--ssh-key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	var pp *ssh.PassphraseMissingError
	if errors.As(err, &pp) {
		return fmt.Errorf("--ssh-key %s is protected by a passphrase: load it into ssh-agent (ssh-add) instead", path)
	}
	if err != nil {
		return fmt.Errorf("--ssh-key %s: not a private key: %w", path, err)
	}
	t.Signer = signer
	return nil
}

// checkKeyFile refuses a private key file that others may read, as
// OpenSSH does ("UNPROTECTED PRIVATE KEY FILE"): one owned by the user
// that group or others may access.
func checkKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("--ssh-key: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if perm := fi.Mode().Perm(); ok && int(st.Uid) == os.Getuid() && perm&0o077 != 0 {
		return fmt.Errorf("--ssh-key %s: permissions %04o are too open: a private key must be readable by its owner only, as OpenSSH requires (chmod 600 %s)", path, perm, path)
	}
	return nil
}
