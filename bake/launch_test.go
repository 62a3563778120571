package bake

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/latentworker/latentworker/config"
)

// launchEC2 records the RunInstances request and refuses it, so that
// nothing is launched and nothing needs undoing but the key pair.
type launchEC2 struct {
	fakeEC2
	in *ec2.RunInstancesInput
}

var errRecorded = errors.New("recorded, not launched")

func (f *launchEC2) RunInstances(_ context.Context, in *ec2.RunInstancesInput, _ ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	f.in = in
	return nil, errRecorded
}

// TestLaunchRequest: a Windows builder gets the user data that enables
// OpenSSH for the run's RSA key, and nothing else does; a dedicated host
// becomes the placement.
func TestLaunchRequest(t *testing.T) {
	for _, tc := range []struct {
		platform, hostID string
		userData         bool
	}{
		{"windows-2025", "", true},
		{"debian-12", "", false},
		{"macos", "h-0123456789abcdef0", false},
	} {
		f := &launchEC2{}
		cfg := config.Default()
		cfg.Worker.Name = "w"
		cfg.Image.Platform = tc.platform
		cfg.AWS.HostID = tc.hostID
		var publicKey string
		_, err := Run(context.Background(), Options{
			Config: cfg, Password: config.NewSecret("hunter2-secret"), EC2: f, STS: fakeSTS{},
			Region: "us-east-1", RunID: "20261124T001500Z-4f2a9c",
			Steps: []Step{
				{StepTempKey, tempKey},
				{StepLaunch, func(ctx context.Context, s *State) error {
					s.BaseAMI, s.RootDevice, publicKey = "ami-0123456789abcdef0", "/dev/sda1", s.PublicKey
					return launch(ctx, s)
				}},
			},
		})
		if !errors.Is(err, errRecorded) || f.in == nil {
			t.Fatalf("%s: Run = %v; want the recorded launch", tc.platform, err)
		}
		ud := aws.ToString(f.in.UserData)
		if (ud != "") != tc.userData {
			t.Errorf("%s: user data %q; want it: %v", tc.platform, ud, tc.userData)
		}
		if ud != "" {
			raw, err := base64.StdEncoding.DecodeString(ud)
			if err != nil {
				t.Fatalf("user data is not base64: %v", err)
			}
			fields := strings.Fields(publicKey)
			if !strings.HasPrefix(publicKey, "ssh-rsa ") || !strings.Contains(string(raw), "'ssh-rsa "+fields[1]+"'") ||
				!strings.HasPrefix(string(raw), "<powershell>") || strings.Contains(string(raw), "hunter2-secret") {
				t.Errorf("%s: user data does not authorize the run's RSA key alone:\n%s", tc.platform, raw)
			}
		}
		switch {
		case tc.hostID == "" && f.in.Placement != nil:
			t.Errorf("%s: placement %+v without a host", tc.platform, f.in.Placement)
		case tc.hostID != "" && (f.in.Placement == nil || aws.ToString(f.in.Placement.HostId) != tc.hostID || f.in.Placement.Tenancy != "host"):
			t.Errorf("%s: placement %+v; want host %s", tc.platform, f.in.Placement, tc.hostID)
		}
	}
}
