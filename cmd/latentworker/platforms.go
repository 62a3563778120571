package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/latentworker/latentworker/platform"
)

type platformsOptions struct {
	json   bool
	stdout io.Writer
}

func newPlatforms() *cobra.Command {
	o := &platformsOptions{stdout: os.Stdout}
	cmd := &cobra.Command{
		Use:   "platforms",
		Short: "List the platforms latentworker bakes, where their base images come from and how each is proved",
		Long: `platforms lists every platform of the registry: its name (the value of
image.platform) and aliases, family, the base image filter on AWS (owner and
name pattern; the newest match is used), the login user, how buildbot-worker
is installed (the distribution's package or pip), what starts it at boot,
and how it is proved: "lab" when a real bake in the lab proves it, "static"
when only golden files, linters and unit tests do; proof says what is left
to prove on AWS.

--json prints one object per line.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPlatforms(o)
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "one JSON object per platform, one per line")
	return cmd
}

// platformJSON is a platform as `platforms --json` prints it.
type platformJSON struct {
	Name        string         `json:"name"`
	Aliases     []string       `json:"aliases"`
	Title       string         `json:"title"`
	Family      string         `json:"family"`
	BaseOwner   string         `json:"base_owner"`
	BaseName    string         `json:"base_name"`
	SSHUser     string         `json:"ssh_user"`
	SSHPort     int            `json:"ssh_port"`
	KeyType     string         `json:"key_type"`
	Install     string         `json:"install"`
	Package     string         `json:"package,omitempty"`
	WorkerUser  string         `json:"worker_user"`
	WorkersDir  string         `json:"workers_dir"`
	Service     string         `json:"service"`
	HostKeys    string         `json:"host_keys"`
	RebootCheck string         `json:"reboot_check"`
	Verify      []string       `json:"verify"`
	NeedsHost   bool           `json:"needs_dedicated_host"`
	BuildDeps   *buildDepsJSON `json:"build_deps"`
	ProvedBy    string         `json:"proved_by"`
	Proof       string         `json:"proof"`
}

// buildDepsJSON is a platform's CPython build dependencies as `platforms
// --json` prints them.
type buildDepsJSON struct {
	Source     string          `json:"source"`
	BuildDepOf string          `json:"build_dep_of,omitempty"`
	Packages   []string        `json:"packages"`
	Installers []installerJSON `json:"installers,omitempty"`
}

type installerJSON struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256,omitempty"`
	Signer string `json:"signer"`
}

func buildDepsToJSON(b *platform.BuildDeps) *buildDepsJSON {
	if b == nil {
		return nil
	}
	out := &buildDepsJSON{Source: b.Source, BuildDepOf: b.BuildDepOf, Packages: b.Packages}
	if out.Packages == nil {
		out.Packages = []string{}
	}
	for _, i := range b.Installers {
		out.Installers = append(out.Installers, installerJSON{Name: i.Name, URL: i.URL, SHA256: i.SHA256, Signer: i.Signer})
	}
	return out
}

func toJSON(p *platform.Platform) platformJSON {
	aliases := p.Aliases
	if aliases == nil {
		aliases = []string{}
	}
	return platformJSON{
		Name: p.Name, Aliases: aliases, Title: p.Title, Family: string(p.Family),
		BaseOwner: p.BaseOwner, BaseName: p.BaseName, SSHUser: p.SSHUser, SSHPort: p.SSHPort,
		KeyType: string(p.KeyType), Install: string(p.Install), Package: p.Package,
		WorkerUser: p.WorkerUser, WorkersDir: p.WorkersDir, Service: string(p.Service),
		HostKeys: string(p.HostKeys), RebootCheck: p.RebootCheck, Verify: p.Verify,
		NeedsHost: p.NeedsHost, BuildDeps: buildDepsToJSON(p.BuildDeps), ProvedBy: string(p.ProvedBy), Proof: p.Proof,
	}
}

func runPlatforms(o *platformsOptions) error {
	if o.json {
		enc := json.NewEncoder(o.stdout)
		for _, p := range platform.All() {
			if err := enc.Encode(toJSON(p)); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFAMILY\tBASE OWNER\tBASE NAME\tUSER\tINSTALL\tSERVICE\tPROVED BY")
	for _, p := range platform.All() {
		name := p.Name
		for _, a := range p.Aliases {
			name += " (" + a + ")"
		}
		owner, base := p.BaseOwner, p.BaseName
		if owner == "" {
			owner = "-"
		}
		if base == "" {
			base = "(give image.base_ami)"
		}
		user := p.SSHUser
		if user == "" {
			user = "(give image.ssh_user)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, p.Family, owner, base, user, p.Install, p.Service, p.ProvedBy)
	}
	return tw.Flush()
}
