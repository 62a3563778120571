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

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"

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
	// ConnectTimeout bounds the first connection, its retries included
	// (default DefaultConnectTimeout): a machine that refuses or does not
	// answer is an error, not a wait forever. A reconnection after a
	// reboot is bounded by RebootTimeout (default 10 minutes).
	ConnectTimeout, RebootTimeout time.Duration
	Progress                      io.Writer
}

// DefaultConnectTimeout bounds Host's first connection.
const DefaultConnectTimeout = time.Minute

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
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.RebootTimeout <= 0 {
		o.RebootTimeout = 10 * time.Minute
	}
	dctx, cancel := context.WithTimeoutCause(ctx, o.ConnectTimeout, fmt.Errorf("no SSH connection within %s", o.ConnectTimeout))
	c, err := Dial(dctx, o.Target)
	cancel()
	if err != nil {
		return nil, err
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	// The next connections ask for the key type that matched.
	o.Target.HostKeyAlgorithms, o.Target.ProbeHostKey = c.HostKeyAlgorithms(), false
	redial := func(ctx context.Context) (*Client, error) {
		rctx, cancel := context.WithTimeoutCause(ctx, o.RebootTimeout, fmt.Errorf("no SSH connection within %s of the reboot", o.RebootTimeout))
		defer cancel()
		return Dial(rctx, o.Target)
	}
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
// the host in files (OpenSSH known_hosts format), and the host key
// algorithms of the keys listed for addr (host:port), for
// Target.HostKeyAlgorithms: the server then presents a key of a type that
// is listed (x/crypto/ssh would otherwise ask for ECDSA before Ed25519, and
// a known_hosts holding only the Ed25519 key, as ssh-keyscan -t ed25519
// writes it, would not match). An error names the files when none can be
// read.
func KnownHosts(addr string, files ...string) (ssh.HostKeyCallback, []string, error) {
	var ok []string
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			ok = append(ok, f)
		}
	}
	if len(ok) == 0 {
		return nil, nil, fmt.Errorf("no known_hosts file among %s: add the host's key (ssh-keyscan HOST >> ~/.ssh/known_hosts, after checking it) or give its fingerprint", strings.Join(files, ", "))
	}
	db, err := knownhosts.NewDB(ok...)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", strings.Join(ok, ", "), err)
	}
	cb := db.HostKeyCallback()
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		var ke *xknownhosts.KeyError
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
	}, db.HostKeyAlgorithms(addr), nil
}

// Fingerprint returns a host key callback that accepts only the key whose
// SHA256 fingerprint ("SHA256:...") is fp. A fingerprint does not say the
// key's type: dial with Target.ProbeHostKey, so that a server asked for
// another type first is asked for the others.
func Fingerprint(fp string) ssh.HostKeyCallback {
	return func(hostname string, _ net.Addr, key ssh.PublicKey) error {
		if got := ssh.FingerprintSHA256(key); got != fp {
			return &HostKeyError{Host: hostname, Fingerprint: got, Type: key.Type(), Want: []string{fp}, Source: "fingerprint given"}
		}
		return nil
	}
}
