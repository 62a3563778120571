package scripts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/latentworker/latentworker/platform"
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
	ServiceResult      string // service_result: the unit's Result, e.g. "success"
	ServiceExitStatus  string // service_exit_status: its main process's exit status
	ServiceStartedUsec string // service_started_usec: when it started in this boot, "0" if not
	// ServiceStartedThisBoot: "yes" when the worker's log was written in
	// this boot (service_started_this_boot), where no service manager
	// reports a start time (rc.d, launchd, a Scheduled Task).
	ServiceStartedThisBoot string
	WorkerRefused          string // worker_refused: "yes" if the worker's last run ended with the master refusing it
	Raw                    map[string]string
}

// ParseFacts parses Verify's stdout: key=value lines, values escaped with
// \\ and \xNN. Blank lines are ignored; a line without '=', an empty or
// repeated key or a bad escape is an error. Unknown keys only go to Raw.
func ParseFacts(out []byte) (Facts, error) {
	f := Facts{Raw: map[string]string{}}
	fields := map[string]*string{
		"worker_dir":                &f.WorkerDir,
		"tac_present":               &f.TacPresent,
		"tac_error":                 &f.TacError,
		"tac_mode":                  &f.TacMode,
		"tac_owner":                 &f.TacOwner,
		"keepalive":                 &f.Keepalive,
		"delete_leftover_dirs":      &f.DeleteLeftoverDirs,
		"buildmaster_host":          &f.MasterHost,
		"port":                      &f.MasterPort,
		"workername":                &f.WorkerName,
		"passwd":                    &f.Passwd,
		"info_admin":                &f.InfoAdmin,
		"info_host_present":         &f.InfoHostPresent,
		"info_host":                 &f.InfoHost,
		"service_enabled":           &f.ServiceEnabled,
		"service_active":            &f.ServiceActive,
		"service_result":            &f.ServiceResult,
		"service_exit_status":       &f.ServiceExitStatus,
		"service_started_usec":      &f.ServiceStartedUsec,
		"service_started_this_boot": &f.ServiceStartedThisBoot,
		"worker_refused":            &f.WorkerRefused,
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

// ServiceUp says whether the worker's service came up on its own in this
// boot, and describes its state either way. It did if it is active, or if
// it started, reached the master and was refused, which ends buildbot-worker
// with status 0: a master that runs the worker as an EC2 latent worker
// refuses a connection it did not ask for (a builder's, before the AMI
// exists), and any master refuses a second connection under a name that is
// connected already.
func (f Facts) ServiceUp() (bool, string) {
	if f.ServiceActive == "active" {
		return true, "active"
	}
	started := f.ServiceStartedUsec != "" && f.ServiceStartedUsec != "0"
	if f.ServiceActive == "inactive" && started && f.ServiceResult == "success" && f.ServiceExitStatus == "0" && f.WorkerRefused == "yes" {
		return true, RefusedByMaster
	}
	// Without systemd: the worker's log says it started in this boot, and
	// the exit status is 0 where the service manager keeps one.
	if f.ServiceStartedUsec == "" && f.ServiceStartedThisBoot == "yes" {
		started = true
		if f.ServiceActive == "inactive" && f.WorkerRefused == "yes" && (f.ServiceExitStatus == "" || f.ServiceExitStatus == "0") {
			return true, RefusedByMaster
		}
	}
	state := f.ServiceActive
	if state == "" {
		state = "no state"
	}
	if !started {
		return false, fmt.Sprintf("%q, not started in this boot", state)
	}
	return false, fmt.Sprintf("%q (result %s, exit status %s, refused by the master: %s)", state, f.ServiceResult, f.ServiceExitStatus, f.WorkerRefused)
}

// RefusedByMaster is ServiceUp's description of a worker that started and
// was refused by its master.
const RefusedByMaster = "started at boot, reached the master and was refused by it (exit status 0), as a master refuses a latent worker it did not start"

// MismatchError lists every way Facts differ from what a Worker needs.
type MismatchError struct {
	Worker     string   // the worker's name
	Mismatches []string // one "key: got X, want Y" per problem
}

// Error lists every mismatch on one line.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("worker %s: %d problem(s): %s", e.Worker, len(e.Mismatches), strings.Join(e.Mismatches, "; "))
}

// Check compares the facts with what Setup makes of w on p and returns nil
// or a *MismatchError naming every mismatch: buildbot.tac present, mode
// 0600 (on Windows an ACL private to the account), owned by the platform's
// worker account and group, keepalive 60, delete_leftover_dirs 1, master
// host and port, worker name, password ok, info/admin and info/host present
// with w's content, and the service enabled and up (ServiceUp).
func (f Facts) Check(p *platform.Platform, w Worker) error {
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
		mode, owner := "0600", p.WorkerUser+":"+p.Group()
		if p.Shell == platform.PowerShell {
			// An ACL, not a mode: only the owner, SYSTEM and the
			// Administrators (verify.ps1's "private").
			mode, owner = "private", p.WorkerUser
		}
		want("tac_mode", f.TacMode, mode)
		want("tac_owner", f.TacOwner, owner)
		want("keepalive", f.Keepalive, "60")
		// NixOS's module writes its own buildbot.tac, with no
		// delete_leftover_dirs (it has no option for it).
		if p.Install != platform.NixOSModule {
			want("delete_leftover_dirs", f.DeleteLeftoverDirs, "1")
		}
		want("buildmaster_host", f.MasterHost, host)
		want("port", f.MasterPort, strconv.Itoa(port))
		want("workername", f.WorkerName, w.Name)
		want("passwd", f.Passwd, "ok")
	}
	want("info_admin", f.InfoAdmin, w.InfoAdmin())
	want("info_host_present", f.InfoHostPresent, "yes")
	want("info_host", f.InfoHost, w.HostInfo)
	want("service_enabled", f.ServiceEnabled, "enabled")
	if up, why := f.ServiceUp(); !up {
		bad = append(bad, fmt.Sprintf("service_active: got %s, want active (or refused by the master)", why))
	}
	if len(bad) > 0 {
		return &MismatchError{Worker: w.Name, Mismatches: bad}
	}
	return nil
}
