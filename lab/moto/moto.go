// Package moto runs moto_server, the lab's EC2/IAM/STS API, on a loopback
// port with the lab's AMI catalogue in place of moto's ~1200 default AMIs.
// It owns the moto process, its catalogue file and the switch that turns
// IAM enforcement on (EnforceIAM); it does not give instances a body (the
// lab's front endpoint does).
package moto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// AMI is one catalogue entry in moto's MOTO_AMIS_PATH format. moto registers
// each entry, with the same ID, in every region it serves.
type AMI struct {
	ID                 string `json:"ami_id"`
	Name               string `json:"name"`
	Description        string `json:"description"`
	OwnerID            string `json:"owner_id"`
	Public             bool   `json:"public"`
	VirtualizationType string `json:"virtualization_type"`
	Architecture       string `json:"architecture"`
	State              string `json:"state"`
	ImageType          string `json:"image_type"`
	ImageLocation      string `json:"image_location"`
	Hypervisor         string `json:"hypervisor"`
	RootDeviceType     string `json:"root_device_type"`
	RootDeviceName     string `json:"root_device_name"`
	Sriov              string `json:"sriov"`
	// creation_date is left out on purpose: moto 5.2 parses it in place and
	// fails on the second region; the lab reports it instead.
}

// Server is a running moto_server.
type Server struct {
	URL string
	cmd *exec.Cmd
	log *os.File
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start writes the catalogue into dir and starts moto_server on 127.0.0.1
// (port 0 picks a free one), with env (KEY=value) added to its
// environment: MOTO_ACCOUNT_ID=012345678901 gives the lab another account.
// It returns once moto answers.
func Start(ctx context.Context, dir string, port int, amis []AMI, env ...string) (*Server, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, errors.New("the lab needs moto_server (Python package moto with its server extra) on PATH (sudo resets PATH: run latentlab as root with your PATH, or sudo env PATH=\"$PATH\" ...)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	catalogue := filepath.Join(dir, "amis.json")
	if amis == nil {
		amis = []AMI{} // moto reads null as no catalogue and fails
	}
	b, err := json.MarshalIndent(amis, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(catalogue, b, 0o644); err != nil {
		return nil, err
	}
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	logf, err := os.OpenFile(filepath.Join(dir, "moto.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Env = append(append(os.Environ(), "MOTO_AMIS_PATH="+catalogue), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start moto_server: %w", err)
	}
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, log: logf}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/moto-api/data.json")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-exited:
			logText, _ := os.ReadFile(filepath.Join(dir, "moto.log"))
			return nil, fmt.Errorf("moto_server exited at start: %s", strings.TrimSpace(string(logText)))
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("moto_server did not answer within 30s")
		}
	}
}

// PID is moto's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop ends moto's process group.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			for {
				if err := syscall.Kill(s.cmd.Process.Pid, 0); err != nil {
					close(done)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	s.log.Close()
}
