package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/platform"
)

func TestParseHost(t *testing.T) {
	debian, err := platform.Lookup("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	windows, err := platform.Lookup("windows-2025")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		arg      string
		p        *platform.Platform
		def      string
		user     string
		addr     string
		errMatch string
	}{
		{"admin@build1.example.org", debian, "admin", "admin", "build1.example.org:22", ""},
		{"me@10.1.2.3:2222", debian, "admin", "me", "10.1.2.3:2222", ""},
		{"10.1.2.3", debian, "admin", "admin", "10.1.2.3:22", ""},
		{"admin@[::1]", debian, "admin", "admin", "[::1]:22", ""},
		{"admin@[2001:db8::7]:2222", debian, "admin", "admin", "[2001:db8::7]:2222", ""},
		{"admin@2001:db8::7", debian, "admin", "admin", "[2001:db8::7]:22", ""},
		{"203.0.113.9", windows, "Administrator", "Administrator", "203.0.113.9:22", ""},
		{"Administrator@203.0.113.9", windows, "Administrator", "Administrator", "203.0.113.9:22", ""},
		{"Administrator@203.0.113.9", debian, "admin", "", "", "login name"},
		{"admin@127.0.0.1:+1", debian, "admin", "", "", "port"},
		{"admin@127.0.0.1:0", debian, "admin", "", "", "port"},
		{"admin@127.0.0.1:65536", debian, "admin", "", "", "port"},
		{"admin@[::1", debian, "admin", "", "", "IPv6"},
		{"admin@host;rm", debian, "admin", "", "", "not a host name"},
		{"admin@fe80::1%eth0", debian, "admin", "", "", "zone"},
	} {
		user, addr, err := parseHost(tc.arg, tc.p, tc.def)
		if tc.errMatch != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errMatch) {
				t.Errorf("parseHost(%q, %s) = %q, %q, %v; want an error about %q", tc.arg, tc.p.Name, user, addr, err, tc.errMatch)
			}
			continue
		}
		if err != nil || user != tc.user || addr != tc.addr {
			t.Errorf("parseHost(%q, %s) = %q, %q, %v; want %q, %q", tc.arg, tc.p.Name, user, addr, err, tc.user, tc.addr)
		}
	}
}

// A private key that others may read is refused, as OpenSSH refuses it.
func TestCheckKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	if err := os.WriteFile(key, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkKeyFile(key); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("checkKeyFile(0644) = %v; want a refusal naming chmod 600", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkKeyFile(key); err != nil {
		t.Errorf("checkKeyFile(0600) = %v", err)
	}
}
