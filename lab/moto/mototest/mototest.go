// Package mototest gives a test a moto_server of its own: the one helper
// the packages that test against moto (cleanup, iam, handoff) share.
package mototest

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// lockedBuffer collects moto_server's output for failure messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start starts a moto_server of the test's own on a free loopback port, with
// moto's default AMIs, and returns its URL; tb.Cleanup kills its process
// group. Without moto_server the test is skipped, or fails when CI=true.
func Start(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("moto_server")
	if err == nil {
		// A pyenv shim exists even when the active Python lacks moto.
		err = exec.Command(bin, "--help").Run()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("moto_server is required when CI=true: %v", err)
		}
		tb.Skipf("moto_server not available: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	var out lockedBuffer
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", port)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting moto_server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})

	url := "http://127.0.0.1:" + port
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/moto-api/data.json")
		if err == nil {
			resp.Body.Close()
			return url
		}
		select {
		case <-done:
			tb.Fatalf("moto_server exited: %s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("moto_server on port %s not ready after 30s: %s", port, out.String())
		}
	}
}

// Image makes an available AMI named name with tags (as bake tags its
// images) in c's moto: from an instance of one of moto's amd64 AMIs, which
// is terminated again.
func Image(tb testing.TB, c *ec2.Client, name string, tags map[string]string) string {
	tb.Helper()
	ctx := context.Background()
	base, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"},
		Filters: []types.Filter{{Name: aws.String("architecture"), Values: []string{"x86_64"}}}, MaxResults: aws.Int32(5)})
	if err != nil || len(base.Images) == 0 {
		tb.Fatalf("a moto AMI: %v", err)
	}
	in, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: base.Images[0].ImageId, InstanceType: types.InstanceTypeT3Small,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		tb.Fatal(err)
	}
	var ts []types.Tag
	for k, v := range tags {
		ts = append(ts, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: in.Instances[0].InstanceId, Name: aws.String(name),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeImage, Tags: ts}}})
	if err != nil {
		tb.Fatalf("CreateImage %s: %v", name, err)
	}
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(in.Instances[0].InstanceId)}}); err != nil {
		tb.Fatal(err)
	}
	return aws.ToString(out.ImageId)
}
