package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/scripts"
)

// HostOptions say how to turn a machine reachable over SSH (any machine,
// not only EC2) into the guide's conventional worker.
type HostOptions struct {
	Target   Target
	Platform *platform.Platform
	// Worker is what Setup writes; HostInfo empty means "OS name
	// (conventional worker)".
	Worker   scripts.Worker
	Password string
	// BuildDeps installs CPython's build dependencies and Packages more
	// packages; Extra are scripts run as root after the worker is set up,
	// in order.
	BuildDeps bool
	Packages  []string
	Extra     []Script
	// Updates applies every pending update, then reboots until the OS asks
	// for no more (at least once); Reboot reboots once without updates.
	// Either way the worker's service must come up on its own after the
	// reboot.
	Updates, Reboot bool
	MaxReboots      int
	// ServiceTimeout bounds the wait for the service after a boot (default
	// 5 minutes).
	ServiceTimeout time.Duration
	Progress       io.Writer
}

// Script is an extra script to run as root.
type Script struct {
	Name    string
	Content []byte
}

// HostResult is what Host did.
type HostResult struct {
	OSName  string
	Worker  scripts.Worker
	Facts   scripts.Facts
	Reboots int
}

// Host sets the worker up on the machine at o.Target with the platform's
// scripts, verifies it, optionally updates and reboots it, and checks that
// the worker's service came up on its own. Running it again converges: a
// changed master, password or info is written and the service restarted.
// The password travels only on the scripts' stdin.
func Host(ctx context.Context, o HostOptions) (*HostResult, error) {
	if o.MaxReboots <= 0 {
		o.MaxReboots = 3
	}
	if o.ServiceTimeout <= 0 {
		o.ServiceTimeout = 5 * time.Minute
	}
	c, err := Dial(ctx, o.Target)
	if err != nil {
		return nil, err
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	redial := func(ctx context.Context) (*Client, error) { return Dial(ctx, o.Target) }
	d := &Driver{Platform: o.Platform, Progress: o.Progress}
	d.Reconnect = func(ctx context.Context, old *Client) (*Client, error) {
		old.Close()
		nc, err := redial(ctx)
		if err == nil {
			c = nc
		}
		return nc, err
	}
	res := &HostResult{}
	if res.OSName, err = d.OSName(ctx, c); err != nil {
		return nil, err
	}
	w := o.Worker
	if w.HostInfo == "" {
		name := res.OSName
		if name == "" {
			name = o.Platform.Title
		}
		w.HostInfo = name + " (conventional worker, set up by latentworker)"
	}
	res.Worker = w
	if err := d.BuildDeps(ctx, c, o.BuildDeps, o.Packages); err != nil {
		return res, fmt.Errorf("installing CPython build dependencies and packages on %s: %w", c.Addr(), err)
	}
	if err := d.Setup(ctx, c, w, o.Password); err != nil {
		return res, fmt.Errorf("setting up worker %s on %s: %w", w.Name, c.Addr(), err)
	}
	for _, s := range o.Extra {
		if err := d.RunScript(ctx, c, s.Name, s.Content); err != nil {
			return res, fmt.Errorf("extra script %s on %s: %w", s.Name, c.Addr(), err)
		}
	}
	if _, err := d.Verify(ctx, c, w, o.Password); err != nil {
		return res, fmt.Errorf("verifying worker %s on %s: %w", w.Name, c.Addr(), err)
	}
	if o.Updates {
		if err := d.Updates(ctx, c); err != nil {
			return res, fmt.Errorf("applying updates on %s: %w", c.Addr(), err)
		}
	}
	for o.Updates || o.Reboot {
		res.Reboots++
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "latentworker: reboot %d of %s\n", res.Reboots, c.Addr())
		}
		nc, err := d.Reboot(ctx, c, redial)
		c = nc
		if err != nil {
			return res, err
		}
		if !o.Updates {
			break
		}
		pending, err := d.RebootRequired(ctx, c)
		if err != nil {
			return res, fmt.Errorf("checking for a pending reboot on %s: %w", c.Addr(), err)
		}
		if !pending {
			break
		}
		if res.Reboots >= o.MaxReboots {
			return res, fmt.Errorf("%s still asks for a reboot after %d reboots", c.Addr(), res.Reboots)
		}
	}
	// The service must be up: at once without a reboot, on its own after.
	deadline := time.Now().Add(o.ServiceTimeout)
	for {
		facts, err := d.Verify(ctx, c, w, o.Password)
		res.Facts = facts
		var mismatch *scripts.MismatchError
		if err == nil {
			return res, nil
		}
		if !errors.As(err, &mismatch) || time.Now().After(deadline) {
			_, why := facts.ServiceUp()
			return res, fmt.Errorf("worker %s on %s: service %s: %w", w.Name, c.Addr(), why, err)
		}
		if err := sleep(ctx, 2*time.Second); err != nil {
			return res, err
		}
	}
}

// KnownHosts returns a host key callback that accepts only keys listed for
// the host in files (OpenSSH known_hosts format), and the key algorithms
// listed there, or an error naming the files when none can be read.
func KnownHosts(files ...string) (ssh.HostKeyCallback, error) {
	var ok []string
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			ok = append(ok, f)
		}
	}
	if len(ok) == 0 {
		return nil, fmt.Errorf("no known_hosts file among %s: add the host's key (ssh-keyscan HOST >> ~/.ssh/known_hosts, after checking it) or give its fingerprint", strings.Join(files, ", "))
	}
	cb, err := knownhosts.New(ok...)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", strings.Join(ok, ", "), err)
	}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) {
			return err
		}
		he := &HostKeyError{Host: hostname, Fingerprint: ssh.FingerprintSHA256(key), Type: key.Type(), Source: strings.Join(ok, ", ")}
		if len(ke.Want) == 0 {
			he.Want = []string{"a key listed for " + hostname + " (there is none: add it after checking it, or give --host-key)"}
		}
		for _, k := range ke.Want {
			he.Want = append(he.Want, ssh.FingerprintSHA256(k.Key)+" ("+filepath.Base(k.Filename)+" line "+fmt.Sprint(k.Line)+")")
		}
		return he
	}, nil
}

// Fingerprint returns a host key callback that accepts only the key whose
// SHA256 fingerprint ("SHA256:...") is fp.
func Fingerprint(fp string) ssh.HostKeyCallback {
	return func(hostname string, _ net.Addr, key ssh.PublicKey) error {
		if got := ssh.FingerprintSHA256(key); got != fp {
			return &HostKeyError{Host: hostname, Fingerprint: got, Type: key.Type(), Want: []string{fp}, Source: "fingerprint given"}
		}
		return nil
	}
}
