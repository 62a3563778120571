package bake

import (
	"strings"
	"testing"
)

func TestStepsOrder(t *testing.T) {
	var names []string
	for _, s := range Steps() {
		if s.Run == nil {
			t.Errorf("step %s has no Run", s.Name)
		}
		names = append(names, s.Name)
	}
	want := "preflight temp-key security-group launch wait-running connect provision verify-config updates-reboot verify-service generalize stop create-image wait-image verify-image release manifest"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("Steps() = %s; want %s", got, want)
	}
}

func TestSSHCIDR(t *testing.T) {
	tests := []struct {
		configured, endpoint, want string
		wantErr                    bool
	}{
		{"203.0.113.7/32", "", "203.0.113.7/32", false},
		{"", "http://127.0.0.1:4566", "127.0.0.1/32", false},
		{"", "http://localhost:4566", "127.0.0.1/32", false},
		{"", "", "", true},
		{"", "https://ec2.us-east-1.amazonaws.com", "", true},
	}
	for _, tt := range tests {
		got, err := sshCIDR(tt.configured, tt.endpoint)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("sshCIDR(%q, %q) = %q, %v; want %q, err %v", tt.configured, tt.endpoint, got, err, tt.want, tt.wantErr)
		}
	}
}
