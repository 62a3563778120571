package cleanup

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

func TestUpSince(t *testing.T) {
	launch := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	attach := launch.Add(-72 * time.Hour)
	nic := func(idx int32, at *time.Time) types.InstanceNetworkInterface {
		return types.InstanceNetworkInterface{Attachment: &types.InstanceNetworkInterfaceAttachment{DeviceIndex: aws.Int32(idx), AttachTime: at}}
	}
	for _, c := range []struct {
		name string
		in   types.Instance
		want time.Time
	}{
		{"primary attach time", types.Instance{LaunchTime: &launch, NetworkInterfaces: []types.InstanceNetworkInterface{nic(1, &launch), nic(0, &attach)}}, attach},
		{"no interface", types.Instance{LaunchTime: &launch}, launch},
		{"no attach time", types.Instance{LaunchTime: &launch, NetworkInterfaces: []types.InstanceNetworkInterface{nic(0, nil)}}, launch},
	} {
		if got := upSince(c.in); !got.Equal(c.want) {
			t.Errorf("upSince(%s) = %v; want %v", c.name, got, c.want)
		}
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := (&Report{}).WriteText(&b); err != nil || b.Len() != 0 {
		t.Errorf("WriteText(empty) = %q, %v; want silence", b.String(), err)
	}
	r := Report{Findings: []Finding{{Region: "us-east-1", Kind: KindZombie, Resource: ResInstance, ID: "i-1", Name: "n",
		Age: 3*time.Hour + 20*time.Second, Reason: "why"}}}
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if want := "us-east-1\tzombie\tinstance i-1 (n)\tage 3h0m0s\twhy\n"; b.String() != want {
		t.Errorf("WriteText = %q; want %q", b.String(), want)
	}
}

func TestRegions(t *testing.T) {
	got, err := Regions(context.Background(), nil, []string{"b", "a", "b"})
	if err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Regions([b a b]) = %v, %v; want [a b]", got, err)
	}
	url := mototest.Start(t)
	clients, _ := motoClients(url)
	var calls Calls
	got, err = Regions(context.Background(), func(r string) EC2API { return Counting(clients(r), &calls) }, nil)
	if err != nil || !slices.Contains(got, "eu-west-1") || !slices.IsSorted(got) || calls.ByOperation()["DescribeRegions"] != 1 {
		t.Errorf("Regions(nil) = %v, %v (calls %v); want the enabled regions, sorted, from one DescribeRegions", got, err, calls.ByOperation())
	}
	t.Logf("%d regions: %s", len(got), strings.Join(got, " "))
}
