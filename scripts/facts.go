package scripts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Facts is what the Verify script reports about a worker. A field whose key
// Verify did not print is empty; Raw has every key as printed (unescaped).
type Facts struct {
	WorkerDir          string // worker_dir
	TacPresent         string // tac_present: "yes" or "no"
	TacError           string // tac_error: set when buildbot.tac is not valid Python
	TacMode            string // tac_mode, e.g. "0600"
	TacOwner           string // tac_owner, "user:group"
	Keepalive          string // keepalive, as written in buildbot.tac
	DeleteLeftoverDirs string // delete_leftover_dirs
	MasterHost         string // buildmaster_host
	MasterPort         string // port
	WorkerName         string // workername
	Passwd             string // passwd: "ok" or "mismatch"; the password itself is never reported
	InfoAdmin          string // info_admin: content of info/admin
	InfoHostPresent    string // info_host_present: "yes" or "no"
	InfoHost           string // info_host: content of info/host
	ServiceEnabled     string // service_enabled: output of systemctl is-enabled
	ServiceActive      string // service_active: output of systemctl is-active
	Raw                map[string]string
}

// ParseFacts parses Verify's stdout: key=value lines, values escaped with
// \\ and \xNN. Blank lines are ignored; a line without '=', an empty or
// repeated key or a bad escape is an error. Unknown keys only go to Raw.
func ParseFacts(out []byte) (Facts, error) {
	f := Facts{Raw: map[string]string{}}
	fields := map[string]*string{
		"worker_dir":           &f.WorkerDir,
		"tac_present":          &f.TacPresent,
		"tac_error":            &f.TacError,
		"tac_mode":             &f.TacMode,
		"tac_owner":            &f.TacOwner,
		"keepalive":            &f.Keepalive,
		"delete_leftover_dirs": &f.DeleteLeftoverDirs,
		"buildmaster_host":     &f.MasterHost,
		"port":                 &f.MasterPort,
		"workername":           &f.WorkerName,
		"passwd":               &f.Passwd,
		"info_admin":           &f.InfoAdmin,
		"info_host_present":    &f.InfoHostPresent,
		"info_host":            &f.InfoHost,
		"service_enabled":      &f.ServiceEnabled,
		"service_active":       &f.ServiceActive,
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		if !ok || key == "" {
			return Facts{}, fmt.Errorf("verify output line %d: not key=value: %q", n, line)
		}
		if _, dup := f.Raw[key]; dup {
			return Facts{}, fmt.Errorf("verify output line %d: key %q repeated", n, key)
		}
		value, err := unescapeFact(raw)
		if err != nil {
			return Facts{}, fmt.Errorf("verify output line %d (%s): %w", n, key, err)
		}
		f.Raw[key] = value
		if p := fields[key]; p != nil {
			*p = value
		}
	}
	if err := sc.Err(); err != nil {
		return Facts{}, fmt.Errorf("read verify output: %w", err)
	}
	if len(f.Raw) == 0 {
		return Facts{}, errors.New("verify output is empty")
	}
	return f, nil
}

func unescapeFact(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		case i+3 < len(s) && s[i+1] == 'x':
			v, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				return "", fmt.Errorf("bad escape %q", s[i:i+4])
			}
			b.WriteByte(byte(v))
			i += 3
		default:
			return "", fmt.Errorf("bad escape at byte %d", i)
		}
	}
	return b.String(), nil
}

// MismatchError lists every way Facts differ from what a Worker needs.
type MismatchError struct {
	Worker     string   // the worker's name
	Mismatches []string // one "key: got X, want Y" per problem
}

// Error lists every mismatch on one line.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("worker %s: %d problem(s): %s", e.Worker, len(e.Mismatches), strings.Join(e.Mismatches, "; "))
}

// Check compares the facts with what Setup makes of w and returns nil or a
// *MismatchError naming every mismatch: buildbot.tac present, mode 0600,
// owned by buildbot:buildbot, keepalive 60, delete_leftover_dirs 1, master
// host and port, worker name, password ok, info/admin and info/host present
// with w's content, and the service enabled and active.
func (f Facts) Check(w Worker) error {
	if err := w.Validate(); err != nil {
		return fmt.Errorf("check worker facts: %w", err)
	}
	host, port, err := w.MasterHostPort()
	if err != nil {
		return fmt.Errorf("check worker facts: %w", err)
	}
	var bad []string
	want := func(key, got, want string) {
		if got != want {
			if _, ok := f.Raw[key]; !ok {
				bad = append(bad, fmt.Sprintf("%s: missing, want %q", key, want))
				return
			}
			bad = append(bad, fmt.Sprintf("%s: got %q, want %q", key, got, want))
		}
	}
	want("tac_present", f.TacPresent, "yes")
	if f.TacError != "" {
		bad = append(bad, "tac_error: "+f.TacError)
	}
	if f.TacPresent == "yes" {
		want("tac_mode", f.TacMode, "0600")
		want("tac_owner", f.TacOwner, "buildbot:buildbot")
		want("keepalive", f.Keepalive, "60")
		want("delete_leftover_dirs", f.DeleteLeftoverDirs, "1")
		want("buildmaster_host", f.MasterHost, host)
		want("port", f.MasterPort, strconv.Itoa(port))
		want("workername", f.WorkerName, w.Name)
		want("passwd", f.Passwd, "ok")
	}
	want("info_admin", f.InfoAdmin, w.InfoAdmin())
	want("info_host_present", f.InfoHostPresent, "yes")
	want("info_host", f.InfoHost, w.HostInfo)
	want("service_enabled", f.ServiceEnabled, "enabled")
	want("service_active", f.ServiceActive, "active")
	if len(bad) > 0 {
		return &MismatchError{Worker: w.Name, Mismatches: bad}
	}
	return nil
}
