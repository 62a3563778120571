package scripts

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		desc   string
		mod    func(*Worker)
		fields []string // fields Validate must name, in order; nil = valid
	}{
		{"golden", func(*Worker) {}, nil},
		{"hostile but printable", func(w *Worker) { *w = hostileWorker }, nil},
		{"name 50", func(w *Worker) { w.Name = long(50) }, nil},
		{"name with _ -", func(w *Worker) { w.Name = "_a-b-c_9" }, nil},
		{"ipv4 master", func(w *Worker) { w.Master = "192.0.2.10:9989" }, nil},
		{"ipv6 master", func(w *Worker) { w.Master = "[2001:db8::1]:9020" }, nil},
		{"single label host", func(w *Worker) { w.Master = "buildmaster:1" }, nil},
		{"port 65535", func(w *Worker) { w.Master = "a.example:65535" }, nil},
		{"unicode admin", func(w *Worker) { w.AdminName = "Łukasz Langa" }, nil},

		{"empty worker", func(w *Worker) { *w = Worker{} }, []string{"Name", "Master", "AdminName", "AdminEmail", "HostInfo"}},
		{"name 51 (buildbot's limit is 50)", func(w *Worker) { w.Name = long(51) }, []string{"Name"}},
		{"name with a dot (not a buildbot identifier)", func(w *Worker) { w.Name = "a.b" }, []string{"Name"}},
		{"name leading digit", func(w *Worker) { w.Name = "9w" }, []string{"Name"}},
		{"name reserved", func(w *Worker) { w.Name = "status" }, []string{"Name"}},
		{"name leading dash", func(w *Worker) { w.Name = "-w" }, []string{"Name"}},
		{"name leading dot", func(w *Worker) { w.Name = ".w" }, []string{"Name"}},
		{"name slash", func(w *Worker) { w.Name = "a/b" }, []string{"Name"}},
		{"name dotdot", func(w *Worker) { w.Name = ".." }, []string{"Name"}},
		{"name space", func(w *Worker) { w.Name = "a b" }, []string{"Name"}},
		{"name unicode", func(w *Worker) { w.Name = "wörker" }, []string{"Name"}},
		{"no port", func(w *Worker) { w.Master = "buildbot.example.org" }, []string{"Master"}},
		{"port 0", func(w *Worker) { w.Master = "h.example:0" }, []string{"Master"}},
		{"port 65536", func(w *Worker) { w.Master = "h.example:65536" }, []string{"Master"}},
		{"port +1", func(w *Worker) { w.Master = "h.example:+1" }, []string{"Master"}},
		{"port 09020", func(w *Worker) { w.Master = "h.example:09020" }, []string{"Master"}},
		{"port name", func(w *Worker) { w.Master = "h.example:http" }, []string{"Master"}},
		{"empty host", func(w *Worker) { w.Master = ":9989" }, []string{"Master"}},
		{"url", func(w *Worker) { w.Master = "http://h.example:9989" }, []string{"Master"}},
		{"bare ipv6", func(w *Worker) { w.Master = "2001:db8::1:9989" }, []string{"Master"}},
		{"bracketed ipv4", func(w *Worker) { w.Master = "[192.0.2.1]:9989" }, []string{"Master"}},
		{"ipv6 zone", func(w *Worker) { w.Master = "[fe80::1%eth0]:9989" }, []string{"Master"}},
		{"bad ipv4", func(w *Worker) { w.Master = "192.0.2.300:9989" }, []string{"Master"}},
		{"label dash", func(w *Worker) { w.Master = "-h.example:1" }, []string{"Master"}},
		{"underscore host", func(w *Worker) { w.Master = "h_1.example:1" }, []string{"Master"}},
		{"long label", func(w *Worker) { w.Master = long(64) + ".example:1" }, []string{"Master"}},
		{"admin too long", func(w *Worker) { w.AdminName = long(MaxAdminNameLen + 1) }, []string{"AdminName"}},
		{"admin angle", func(w *Worker) { w.AdminName = "Jane <x>" }, []string{"AdminName"}},
		{"admin tab", func(w *Worker) { w.AdminName = "Jane\tDoe" }, []string{"AdminName"}},
		{"admin bidi", func(w *Worker) { w.AdminName = "Jane\u202eeoD" }, []string{"AdminName"}},
		{"admin trailing space", func(w *Worker) { w.AdminName = "Jane " }, []string{"AdminName"}},
		{"admin bad utf8", func(w *Worker) { w.AdminName = "Jane\xff" }, []string{"AdminName"}},
		{"email no at", func(w *Worker) { w.AdminEmail = "jane.example.org" }, []string{"AdminEmail"}},
		{"email two at", func(w *Worker) { w.AdminEmail = "a@b@c" }, []string{"AdminEmail"}},
		{"email space", func(w *Worker) { w.AdminEmail = "jane doe@example.org" }, []string{"AdminEmail"}},
		{"email angle", func(w *Worker) { w.AdminEmail = "jane>@example.org" }, []string{"AdminEmail"}},
		{"email empty local", func(w *Worker) { w.AdminEmail = "@example.org" }, []string{"AdminEmail"}},
		{"host info newline", func(w *Worker) { w.HostInfo = "a\nb" }, []string{"HostInfo"}},
		{"host info too long", func(w *Worker) { w.HostInfo = long(MaxHostInfoLen + 1) }, []string{"HostInfo"}},
		{"two fields", func(w *Worker) { w.Name = ""; w.HostInfo = "" }, []string{"Name", "HostInfo"}},
	} {
		w := goldenWorker
		tc.mod(&w)
		err := w.Validate()
		var got []string
		for _, fe := range fieldErrors(err) {
			got = append(got, fe.Field)
			if !strings.Contains(fe.Error(), fe.Field) || fe.Rule == "" {
				t.Errorf("%s: error %q does not name the field and the rule", tc.desc, fe)
			}
		}
		if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
			t.Errorf("%s: %+v.Validate() = %v; want errors for %v", tc.desc, w, err, tc.fields)
		}
		if (err == nil) != (tc.fields == nil) {
			t.Errorf("%s: Validate() = %v; want error=%v", tc.desc, err, tc.fields != nil)
		}
	}
}

func TestObfuscateEmail(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"user@example.com", "user AT example.com"},
		{"first.last+tag@sub.example.org", "first.last+tag AT sub.example.org"},
		{"no-at-sign", "no-at-sign"},
		{"", ""},
		{"a@b@c", "a@b AT c"},
	} {
		if got := ObfuscateEmail(tc.in); got != tc.want {
			t.Errorf("ObfuscateEmail(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
	if got, want := goldenWorker.InfoAdmin(), "Jane Doe <jane AT example.org>"; got != want {
		t.Errorf("InfoAdmin() = %q; want %q", got, want)
	}
}

func TestMasterHostPort(t *testing.T) {
	for _, tc := range []struct {
		master, host string
		port         int
	}{
		{"buildbot.example.org:9020", "buildbot.example.org", 9020},
		{"[2001:db8::1]:9989", "2001:db8::1", 9989},
		{"192.0.2.1:1", "192.0.2.1", 1},
	} {
		h, p, err := Worker{Master: tc.master}.MasterHostPort()
		if err != nil || h != tc.host || p != tc.port {
			t.Errorf("MasterHostPort(%q) = %q, %d, %v; want %q, %d, nil", tc.master, h, p, err, tc.host, tc.port)
		}
	}
}
