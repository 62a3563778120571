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

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

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
(default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts) or --host-key
SHA256:...; an unknown key is refused. The key is --ssh-key, else the SSH
agent (SSH_AUTH_SOCK), else ~/.ssh/id_ed25519. The worker password travels
only on the scripts' stdin.

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

// parseHost splits [USER@]HOST[:PORT] and checks each part.
func parseHost(arg, defUser string, defPort int) (user, addr string, err error) {
	user, hostPort, found := strings.Cut(arg, "@")
	if !found {
		user, hostPort = defUser, arg
	}
	if !regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`).MatchString(user) {
		return "", "", fmt.Errorf("HOST %q: the user %q must be a login name (lower-case letters, digits, '_' and '-')", arg, user)
	}
	host, port := hostPort, strconv.Itoa(defPort)
	if h, p, err := net.SplitHostPort(hostPort); err == nil {
		host, port = h, p
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("HOST %q: port must be 1-65535", arg)
	}
	if _, err := netip.ParseAddr(host); err != nil && !regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$`).MatchString(host) {
		return "", "", fmt.Errorf("HOST %q: %q is not a host name or an IP address", arg, host)
	}
	return user, net.JoinHostPort(host, port), nil
}

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
	user, addr, err := parseHost(hostArg, cfg.Image.EffectiveSSHUser(), p.SSHPort)
	if err != nil {
		return badInput{err}
	}
	if o.hostKey != "" && !fingerprintRE.MatchString(o.hostKey) {
		return badInput{fmt.Errorf("--host-key %q: must be a SHA256 fingerprint, SHA256: and 43 base64 characters (ssh-keygen -lf KEY.pub)", o.hostKey)}
	}
	t := provision.Target{Addr: addr, User: user}
	if o.hostKey != "" {
		t.HostKey = provision.Fingerprint(o.hostKey)
	} else {
		files := o.knownHosts
		if len(files) == 0 {
			home, _ := os.UserHomeDir()
			files = []string{filepath.Join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"}
		}
		if t.HostKey, err = provision.KnownHosts(files...); err != nil {
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
