// Command renderps writes every PowerShell script latentworker renders —
// each Windows platform's scripts and the body of its launch user data,
// for a plain worker and for one whose values are full of PowerShell
// metacharacters — into a directory, for hack/pslint.sh to parse.
//
// Usage: go run ./hack/renderps DIR
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/scripts"
)

// tempKey is a real RSA public key whose private half was thrown away.
const tempKey = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDoMaVsaRKzDGWzEB1cv/kYpPpR8y/lbsU+xRw3I5CAINxLygcoxEUVhAARdp1caX7iZrb4yP1kTkpUlEFf9clBVRzE5kho38TiwN8gKKGQn0wPBLjHze91xATdeomFU5JoiPXtvxqAUfZUIk0F78pG2UkizXOaXfTggnydTRV6bLFMVy6C8snJNaBxXwx5b0BIjTfb6TTFQoBc9xPMLcokvdY30RY/CTcnrXVkaBmbacS6MtMKglT4RQkfNnrr8vzfsILAMaX1JxGkq8nCa1TN8jhByeY9uMhHYRE6coHOvCnETyq86xEbTIeDdSkviXg/xQ969qni1V9bgj9uI+pb"

var workers = map[string]scripts.Worker{
	"plain": {
		Name: "cpython-windows-aws", Master: "buildbot.example.org:9020",
		AdminName: "Jane Doe", AdminEmail: "jane@example.org", HostInfo: "Windows Server on EC2 (latentworker)",
	},
	"hostile": {
		Name: "w_1-x_y", Master: "[2001:db8::1]:9989",
		AdminName:  "O'Brien \u2019$(Remove-Item C:\\ -Recurse)\u2018 `n \"x\" ${env:PATH} @a ; & | #",
		AdminEmail: "o'b$(whoami)`x@example.org",
		HostInfo:   "'; Restart-Computer -Force #' \"$(Stop-Computer)\" @' '@ \u201a\u201b \u0141\u00f3d\u017a",
	},
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: renderps DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "renderps:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	n := 0
	for _, p := range platform.All() {
		if p.Shell != platform.PowerShell {
			continue
		}
		for label, w := range workers {
			for name, render := range map[string]func() ([]byte, error){
				"setup":           func() ([]byte, error) { return scripts.Setup(p, w) },
				"verify":          func() ([]byte, error) { return scripts.Verify(p, w) },
				"updates":         func() ([]byte, error) { return scripts.Updates(p) },
				"reboot-required": func() ([]byte, error) { return scripts.RebootRequired(p) },
				"generalize":      func() ([]byte, error) { return scripts.Generalize(p, p.SSHUser, tempKey) },
				"builddeps":       func() ([]byte, error) { return scripts.BuildDeps(p) },
				"userdata":        func() ([]byte, error) { return userDataBody(p) },
			} {
				body, err := render()
				if errors.Is(err, scripts.ErrUnsupported) {
					continue
				}
				if err != nil {
					return fmt.Errorf("%s %s (%s worker): %w", p.Name, name, label, err)
				}
				file := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.ps1", p.Name, name, label))
				if err := os.WriteFile(file, body, 0o644); err != nil {
					return err
				}
				n++
			}
		}
	}
	if n == 0 {
		return errors.New("no PowerShell platform in the registry")
	}
	return nil
}

// userDataBody is the PowerShell between the user data's <powershell> tags.
func userDataBody(p *platform.Platform) ([]byte, error) {
	ud, err := scripts.UserData(p, tempKey)
	if err != nil {
		return nil, err
	}
	body, ok := bytes.CutPrefix(ud, []byte("<powershell>\n"))
	if !ok || !bytes.HasSuffix(body, []byte("</powershell>\n")) {
		return nil, fmt.Errorf("user data of %s is not one <powershell> block: %q", p.Name, strings.SplitN(string(ud), "\n", 2)[0])
	}
	return bytes.TrimSuffix(body, []byte("</powershell>\n")), nil
}
