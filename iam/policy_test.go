package iam

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/fleet"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// base returns the options of a plain worker: one AMI, one type, no extras.
func base() PolicyOptions {
	return PolicyOptions{
		Region:             "eu-west-1",
		AccountID:          "123456789012",
		AMIs:               []string{"ami-0123456789abcdef0"},
		InstanceTypes:      []string{"t3.small"},
		KeyPair:            "latentworker-cpython-w1",
		SecurityGroupID:    "sg-0a1b2c3d4e5f60718",
		SubnetID:           "subnet-0f1e2d3c4b5a69788",
		InstanceProfileARN: "arn:aws:iam::123456789012:instance-profile/latentworker/latentworker-cpython-w1",
		RoleARN:            "arn:aws:iam::123456789012:role/latentworker/latentworker-cpython-w1",
		Tags:               map[string]string{fleet.TagWorker: "cpython-w1"},
	}
}

func goldenCases() map[string]PolicyOptions {
	spot := base()
	spot.Spot = true
	two := base()
	two.InstanceTypes = []string{"t3.small", "c6i.large"}
	eip := base()
	eip.ElasticIPAllocation = "eipalloc-0123456789abcdef0"
	vols := base()
	vols.Volumes = []string{"vol-0fedcba9876543210"}
	notags := base()
	notags.Tags = nil
	switchover := base()
	switchover.AMIs = []string{"ami-0fedcba9876543210", "ami-0123456789abcdef0"}
	kms := base()
	kms.KMSKeys = []string{"arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
	newest := base()
	newest.AMIs, newest.FindNewest, newest.Worker = nil, true, "cpython-w1"
	return map[string]PolicyOptions{
		"kms":                kms,
		"find-newest":        newest,
		"plain":              base(),
		"spot":               spot,
		"two-instance-types": two,
		"elastic-ip":         eip,
		"volumes":            vols,
		"no-tags":            notags,
		"two-amis":           switchover,
	}
}

func TestWorkerPolicyGolden(t *testing.T) {
	for name, o := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			doc, err := WorkerPolicy(o)
			if err != nil {
				t.Fatalf("WorkerPolicy(%s) error: %v", name, err)
			}
			got, err := doc.JSON()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./iam -run Golden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("WorkerPolicy(%s) differs from %s (go test ./iam -run Golden -update to accept):\n%s", name, path, got)
			}
		})
	}
}

func TestTrustPolicyGolden(t *testing.T) {
	got, err := EC2TrustPolicy("aws").JSON()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "trust-ec2.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("EC2TrustPolicy differs from %s:\n%s", path, got)
	}
}

// TestWorkerPolicyJSONValidAndDeterministic checks that the document is
// valid JSON of the IAM shape and identical across calls and across option
// orders (AMIs, types and tags given in another order).
func TestWorkerPolicyJSONValidAndDeterministic(t *testing.T) {
	for name, o := range goldenCases() {
		d1, err := WorkerPolicy(o)
		if err != nil {
			t.Fatal(err)
		}
		b1, _ := d1.JSON()
		rev := o
		rev.AMIs = slices.Clone(o.AMIs)
		slices.Reverse(rev.AMIs)
		rev.InstanceTypes = slices.Clone(o.InstanceTypes)
		slices.Reverse(rev.InstanceTypes)
		for range 5 {
			d2, _ := WorkerPolicy(rev)
			b2, _ := d2.JSON()
			if !bytes.Equal(b1, b2) {
				t.Fatalf("%s: WorkerPolicy is not deterministic:\n%s\n%s", name, b1, b2)
			}
		}
		if !json.Valid(b1) {
			t.Fatalf("%s: invalid JSON", name)
		}
		var generic struct {
			Version   string
			Statement []map[string]any
		}
		dec := json.NewDecoder(bytes.NewReader(b1))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&generic); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if generic.Version != "2012-10-17" {
			t.Errorf("%s: Version = %q", name, generic.Version)
		}
		sids := map[string]bool{}
		for _, s := range d1.Statement {
			if sids[s.Sid] {
				t.Errorf("%s: duplicate Sid %q", name, s.Sid)
			}
			sids[s.Sid] = true
			if s.Effect != "Allow" {
				t.Errorf("%s: %s: Effect %q", name, s.Sid, s.Effect)
			}
			// Every EC2 statement is limited to the region.
			if strings.HasPrefix(s.Action[0], "ec2:") {
				if got := s.Condition["StringEquals"]["aws:RequestedRegion"]; !slices.Equal(got, []string{o.Region}) {
					t.Errorf("%s: %s: aws:RequestedRegion = %v; want [%s]", name, s.Sid, got, o.Region)
				}
			}
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b1); err != nil {
			t.Fatal(err)
		}
		// IAM counts a managed policy without whitespace; 6,144 at most.
		if compact.Len() > 6144 {
			t.Errorf("%s: %d characters, over IAM's 6,144 for a managed policy", name, compact.Len())
		}
	}
}

// TestWorkerPolicyActions checks the action set per option against the
// EC2LatentWorker mapping, and that nothing dangerous slips in.
func TestWorkerPolicyActions(t *testing.T) {
	always := []string{
		"ec2:CreateTags", "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeKeyPairs",
		"ec2:DescribeSecurityGroups", "ec2:GetConsoleOutput", "ec2:RunInstances",
		"ec2:TerminateInstances", "iam:PassRole",
	}
	tests := []struct {
		name  string
		extra []string
	}{
		{"plain", nil},
		{"spot", []string{"ec2:CancelSpotInstanceRequests", "ec2:DescribeSpotInstanceRequests", "ec2:DescribeSpotPriceHistory", "ec2:RequestSpotInstances"}},
		{"elastic-ip", []string{"ec2:AssociateAddress", "ec2:DescribeAddresses", "ec2:DisassociateAddress"}},
		{"volumes", []string{"ec2:AttachVolume"}},
	}
	cases := goldenCases()
	for _, tt := range tests {
		doc, err := WorkerPolicy(cases[tt.name])
		if err != nil {
			t.Fatal(err)
		}
		want := append(slices.Clone(always), tt.extra...)
		slices.Sort(want)
		if got := doc.Actions(); !slices.Equal(got, want) {
			t.Errorf("WorkerPolicy(%s).Actions() = %v; want %v", tt.name, got, want)
		}
		for _, s := range doc.Statement {
			for _, r := range s.Resource {
				if r == "*" && !slices.ContainsFunc(s.Action, func(a string) bool { return strings.HasPrefix(a, "ec2:Describe") }) {
					t.Errorf("%s: %s allows %v on *", tt.name, s.Sid, s.Action)
				}
			}
		}
	}
}

func TestActionLevel(t *testing.T) {
	doc, _ := WorkerPolicy(goldenCases()["spot"])
	al := doc.ActionLevel()
	if len(al.Statement) != 1 || !slices.Equal(al.Statement[0].Resource, []string{"*"}) || al.Statement[0].Condition != nil {
		t.Fatalf("ActionLevel() = %+v", al)
	}
	if !slices.Equal(al.Actions(), doc.Actions()) {
		t.Errorf("ActionLevel().Actions() = %v; want %v", al.Actions(), doc.Actions())
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*PolicyOptions)
		fields []string // the fields named in the errors, in order; nil for valid
	}{
		{"valid", func(*PolicyOptions) {}, nil},
		{"8-hex IDs", func(o *PolicyOptions) {
			o.AMIs = []string{"ami-12c6146b"}
			o.SecurityGroupID = "sg-1234abcd"
			o.SubnetID = "subnet-1234abcd"
		}, nil},
		{"govcloud", func(o *PolicyOptions) {
			o.Region = "us-gov-west-1"
			o.InstanceProfileARN = strings.Replace(o.InstanceProfileARN, "arn:aws:", "arn:aws-us-gov:", 1)
			o.RoleARN = strings.Replace(o.RoleARN, "arn:aws:", "arn:aws-us-gov:", 1)
		}, nil},
		{"kms keys", func(o *PolicyOptions) {
			o.KMSKeys = []string{"alias/lw", "arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
		}, []string{"KMSKeys[0]", "KMSKeys[1]"}},
		{"empty", func(o *PolicyOptions) { *o = PolicyOptions{} }, []string{
			"Region", "AccountID", "AMIs", "InstanceTypes", "KeyPair", "SecurityGroupID",
			"SubnetID", "InstanceProfileARN", "RoleARN",
		}},
		{"bad region", func(o *PolicyOptions) { o.Region = "Europe" }, []string{"Region"}},
		{"bad AMI", func(o *PolicyOptions) { o.AMIs = append(o.AMIs, "ami-XYZ") }, []string{"AMIs[1]"}},
		{"wildcard AMI", func(o *PolicyOptions) { o.AMIs = []string{"ami-*"} }, []string{"AMIs[0]"}},
		{"bad type", func(o *PolicyOptions) { o.InstanceTypes = []string{"t3.small", "large"} }, []string{"InstanceTypes[1]"}},
		{"wildcard type", func(o *PolicyOptions) { o.InstanceTypes = []string{"t3.*"} }, []string{"InstanceTypes[0]"}},
		{"key pair wildcard", func(o *PolicyOptions) { o.KeyPair = "*" }, []string{"KeyPair"}},
		{"sg", func(o *PolicyOptions) { o.SecurityGroupID = "default" }, []string{"SecurityGroupID"}},
		{"subnet", func(o *PolicyOptions) { o.SubnetID = "sg-0a1b2c3d4e5f60718" }, []string{"SubnetID"}},
		{"profile is a role", func(o *PolicyOptions) { o.InstanceProfileARN = o.RoleARN }, []string{"InstanceProfileARN"}},
		{"role in another account", func(o *PolicyOptions) {
			o.RoleARN = "arn:aws:iam::210987654321:role/latentworker/x"
		}, []string{"RoleARN"}},
		{"role in another partition", func(o *PolicyOptions) { o.Region = "cn-north-1" }, []string{"InstanceProfileARN", "RoleARN"}},
		{"eip", func(o *PolicyOptions) { o.ElasticIPAllocation = "203.0.113.7" }, []string{"ElasticIPAllocation"}},
		{"volume", func(o *PolicyOptions) { o.Volumes = []string{"vol-0fedcba9876543210", "/dev/sdf"} }, []string{"Volumes[1]"}},
		{"aws tag", func(o *PolicyOptions) { o.Tags = map[string]string{"aws:x": "y"} }, []string{"Tags key"}},
		{"bad tag value", func(o *PolicyOptions) { o.Tags = map[string]string{"k": "a\"b"} }, []string{"Tags[k]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.change(&o)
			err := o.Validate()
			var fields []string
			for _, e := range unjoin(err) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("Validate() error %v is not a *FieldError", e)
				}
				if !strings.Contains(fe.Error(), fe.Field) {
					t.Errorf("error %q does not name field %s", fe, fe.Field)
				}
				fields = append(fields, fe.Field)
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("Validate(%s) fields = %v; want %v (error: %v)", tt.name, fields, tt.fields, err)
			}
			if _, werr := WorkerPolicy(o); (werr == nil) != (tt.fields == nil) {
				t.Errorf("WorkerPolicy(%s) error = %v; want error: %v", tt.name, werr, tt.fields != nil)
			}
		})
	}
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestPartition(t *testing.T) {
	for region, want := range map[string]string{
		"eu-west-1": "aws", "cn-northwest-1": "aws-cn", "us-gov-east-1": "aws-us-gov", "us-east-1": "aws",
	} {
		if got := Partition(region); got != want {
			t.Errorf("Partition(%q) = %q; want %q", region, got, want)
		}
	}
}

func TestSameDocument(t *testing.T) {
	a := []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["a"]}]}`)
	b := []byte("{\n \"Statement\": [{\"Action\": [\"a\"], \"Effect\": \"Allow\"}],\n \"Version\": \"2012-10-17\"}")
	c := []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["b"]}]}`)
	if !sameDocument(a, b) {
		t.Error("sameDocument(a, b) = false; want true")
	}
	if sameDocument(a, c) {
		t.Error("sameDocument(a, c) = true; want false")
	}
}
