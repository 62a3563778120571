package fleet

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestRunID(t *testing.T) {
	at := time.Date(2026, 11, 24, 0, 15, 0, 0, time.FixedZone("x", 3600))
	id, err := RunID(at, bytes.NewReader([]byte{0x4f, 0x2a, 0x9c}))
	if want := "20261123T231500Z-4f2a9c"; id != want || err != nil {
		t.Fatalf("RunID = %q, %v; want %q, nil", id, err, want)
	}
	if _, err := RunID(at, bytes.NewReader(nil)); err == nil {
		t.Error("RunID(empty reader) = nil error; want one")
	}
	got, err := RunIDTime(id)
	if !got.Equal(at) || err != nil {
		t.Errorf("RunIDTime(%q) = %v, %v; want %v", id, got, err, at)
	}
	a, b := NewRunID(), NewRunID()
	if _, err := RunIDTime(a); err != nil {
		t.Errorf("RunIDTime(NewRunID()=%q) = %v", a, err)
	}
	if a == b {
		t.Errorf("two NewRunID() are both %q", a)
	}
	later, _ := RunID(at.Add(time.Second), bytes.NewReader([]byte{0, 0, 0}))
	if !(id < later) {
		t.Errorf("run IDs do not sort by time: %q >= %q", id, later)
	}
	for _, bad := range []string{"", "20261124T001500Z", "20261124T001500Z-zzzzzz", "2026112xT001500Z-000000"} {
		if _, err := RunIDTime(bad); err == nil {
			t.Errorf("RunIDTime(%q) = nil error; want one", bad)
		}
	}
}

func TestNames(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct{ got, want string }{
		{AMIName("latentworker", "lw-e2e", at), "latentworker-lw-e2e-20260102-030405"},
		{AMINamePattern("latentworker", "lw-e2e"), "latentworker-lw-e2e-????????-??????"},
		{TempName("20261124T001500Z-4f2a9c"), "latentworker-20261124T001500Z-4f2a9c"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q; want %q", tt.got, tt.want)
		}
	}
	if a, b := AMIName("p", "w", at), AMIName("p", "w", at.Add(time.Hour*24*40)); !(a < b) {
		t.Errorf("AMI names do not sort by date: %q >= %q", a, b)
	}
}

func TestTemporary(t *testing.T) {
	for _, r := range Roles() {
		want := r != RoleImage && r != RoleSnapshot && r != RoleBuilder
		if got := r.Temporary(); got != want {
			t.Errorf("%s.Temporary() = %v; want %v", r, got, want)
		}
	}
}

func TestTagsGolden(t *testing.T) {
	l := Labels{
		RunID: "20261124T001500Z-4f2a9c", Worker: "lw-e2e",
		Creator:   "arn:aws:iam::123456789012:user/me",
		Expires:   time.Date(2026, 11, 25, 0, 15, 0, 0, time.UTC),
		SourceAMI: "ami-0123456789abcdef0", Replaces: "ami-0fedcba9876543210",
		Extra: map[string]string{"team": "cpython", TagRole: "user-cannot-override"},
	}
	var b strings.Builder
	for _, c := range []struct {
		rt   types.ResourceType
		role Role
		name string
	}{
		{types.ResourceTypeInstance, RoleBuilder, "latentworker-lw-e2e-builder"},
		{types.ResourceTypeKeyPair, RoleTempKey, TempName(l.RunID)},
		{types.ResourceTypeImage, RoleImage, ""},
		{types.ResourceTypeSnapshot, RoleSnapshot, ""},
	} {
		s := l.Spec(c.rt, c.role, c.name)
		fmt.Fprintf(&b, "[%s %s]\n", s.ResourceType, c.role)
		for _, tag := range s.Tags {
			fmt.Fprintf(&b, "%s = %s\n", aws.ToString(tag.Key), aws.ToString(tag.Value))
		}
	}
	golden := filepath.Join("testdata", "tags.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if b.String() != string(want) {
		t.Errorf("tags differ from %s:\n%s\nwant:\n%s", golden, b.String(), want)
	}
	if f := RunFilter(l.RunID); aws.ToString(f.Name) != "tag:"+TagRunID || f.Values[0] != l.RunID {
		t.Errorf("RunFilter = %v", f)
	}
}
