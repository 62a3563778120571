package lab_test

import (
	"context"
	"io/fs"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/lab"
	"github.com/latentworker/latentworker/lab/image"
	"github.com/latentworker/latentworker/lab/labtest"
)

// TestReleases boots every release the lab can boot, as a client on AWS
// would: the newest AMI found by owner and name, two instances of it (their
// sshds must not collide on the shared network), SSH as the image's default
// user, the release's VERSION_ID, buildbot-worker installed through the lab's
// apt cache (from universe on Ubuntu, after Ubuntu's first-boot apt run), and
// a reboot that changes the boot ID (RebootInstances: systemd's signal, or
// sysvinit's runlevel 6 for the releases without systemd). Bases not cached
// yet are built on first launch, the instances pending meanwhile.
func TestReleases(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a lab")
	}
	labtest.Require(t)
	for _, r := range image.Recipes() {
		labtest.RequireImage(t, r.Name)
	}
	// No base is built before the lab starts: every release's is built (or
	// found in the cache) on its first launch.
	l := labtest.Start(t, "images = []\n[master]\nenabled = false\n")
	c := l.EC2("")
	key := importKey(t, c, "releases")
	for _, r := range image.Recipes() {
		t.Run(r.Name, func(t *testing.T) {
			t.Parallel()
			testRelease(t, l, c, key, r)
		})
	}
}

func testRelease(t *testing.T, l *labtest.Lab, c *ec2.Client, key keyPair, r image.Recipe) {
	ctx := context.Background()
	out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{r.Owner},
		Filters: []types.Filter{
			{Name: aws.String("name"), Values: []string{r.NamePattern}},
			{Name: aws.String("architecture"), Values: []string{"x86_64"}},
		},
	})
	if err != nil {
		t.Fatalf("DescribeImages(%s, %s): %v", r.Owner, r.NamePattern, err)
	}
	if len(out.Images) == 0 {
		t.Fatalf("no image owned by %s named %s", r.Owner, r.NamePattern)
	}
	sort.Slice(out.Images, func(i, j int) bool {
		return aws.ToString(out.Images[i].CreationDate) < aws.ToString(out.Images[j].CreationDate)
	})
	newest := out.Images[len(out.Images)-1]
	var want lab.CatalogueImage
	for _, ci := range lab.Catalogue() {
		if ci.Release == r.Name && ci.Bootable && ci.Created.After(want.Created) {
			want = ci
		}
	}
	if aws.ToString(newest.ImageId) != want.ID || aws.ToString(newest.Name) != want.Name || want.User != r.User {
		t.Fatalf("newest %s by filter = %s %s; want the catalogue's %s %s (user %s)", r.Name,
			aws.ToString(newest.ImageId), aws.ToString(newest.Name), want.ID, want.Name, want.User)
	}

	start := time.Now()
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: newest.ImageId, InstanceType: types.InstanceTypeT3Small,
		KeyName: aws.String(key.name), MinCount: aws.Int32(2), MaxCount: aws.Int32(2),
	})
	if err != nil {
		t.Fatalf("RunInstances(%s): %v", aws.ToString(newest.ImageId), err)
	}
	var ids []string
	for _, in := range run.Instances {
		if in.State.Name != types.InstanceStateNamePending {
			t.Errorf("RunInstances: %s is %s; want pending", aws.ToString(in.InstanceId), in.State.Name)
		}
		ids = append(ids, aws.ToString(in.InstanceId))
	}
	t.Cleanup(func() {
		terminate(t, c, ids...)
		assertNoBody(t, l, ids...)
	})
	// A base built on first use takes minutes; a cached one, none.
	waiter := ec2.NewInstanceRunningWaiter(c, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = 500*time.Millisecond, 2*time.Second
	})
	if err := waiter.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, 15*time.Minute); err != nil {
		t.Fatalf("waiting for %v to run: %v", ids, err)
	}
	running := time.Since(start)
	d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	var insts []instance
	for _, res := range d.Reservations {
		for _, in := range res.Instances {
			insts = append(insts, instance{id: aws.ToString(in.InstanceId), addr: aws.ToString(in.PublicIpAddress)})
		}
	}
	sort.Slice(insts, func(i, j int) bool { return insts[i].id < insts[j].id })
	for i := range insts {
		insts[i].hostKeys = consoleHostKeys(t, c, insts[i].id)
	}

	// Each guest answers on its own address only: the hostname the lab
	// gave it, and a socket-activated sshd (Ubuntu 24.04) bound to it.
	for _, in := range insts {
		var got string
		eventually(t, time.Minute, "ssh to "+in.id, func() error {
			var err error
			got, err = sshRun(in.addr, r.User, key.signer, in.hostKeys,
				`. /etc/os-release && echo "$VERSION_ID" && id -un && hostname && sudo -n true && echo sudo-ok && `+
					`if command -v systemctl >/dev/null && systemctl -q is-active ssh.socket; then systemctl show -p Listen --value ssh.socket; else echo no-socket; fi`)
			return err
		})
		if in.id == insts[0].id {
			t.Logf("%s: launch to running %.1fs, to SSH as %s %.1fs", r.Name, running.Seconds(), r.User, time.Since(start).Seconds())
		}
		lines := strings.Split(got, "\n")
		wantHost := "ip-" + strings.ReplaceAll(in.addr, ".", "-")
		if len(lines) != 5 || lines[0] != r.VersionID || lines[1] != r.User || lines[2] != wantHost || lines[3] != "sudo-ok" {
			t.Fatalf("%s at %s says %q; want VERSION_ID %s, user %s, hostname %s, sudo-ok", in.id, in.addr, got, r.VersionID, r.User, wantHost)
		}
		if lines[4] != "no-socket" && lines[4] != in.addr+":22 (Stream)" {
			t.Errorf("%s: ssh.socket listens on %q; want only %s:22", in.id, lines[4], in.addr)
		}
	}

	inst, other := insts[0], insts[1]
	t.Run("buildbot-worker through the apt cache", func(t *testing.T) {
		begin := time.Now()
		// apt update fails at once while the first boot's apt run holds
		// the lists lock (Ubuntu): retry, as a provisioning script must.
		out, err := sshRun(inst.addr, r.User, key.signer, inst.hostKeys, `set -e
apt-config dump Acquire::http::Proxy
for i in $(seq 120); do
	if sudo apt-get -q update >/tmp/update.log 2>&1; then break; fi
	sleep 5
done
tail -n 3 /tmp/update.log
sudo DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=900 install --no-install-recommends buildbot-worker >/tmp/install.log 2>&1 || { tail -n 30 /tmp/install.log; exit 1; }
dpkg-query -W -f='${Version}\n' buildbot-worker
buildbot-worker --version
if systemctl cat apt-daily.service >/dev/null 2>&1; then systemctl show -p ExecMainStartTimestampMonotonic --value apt-daily.service; fi`)
		if err != nil {
			t.Fatalf("apt-get install buildbot-worker: %v\n%s", err, out)
		}
		if !strings.Contains(out, `Acquire::http::Proxy "http://127.0.0.1:`) {
			t.Errorf("apt in the guest does not go through the lab's cache:\n%s", out)
		}
		if !strings.Contains(out, "worker version: ") {
			t.Errorf("buildbot-worker --version did not answer:\n%s", out)
		}
		if r.Family == image.Ubuntu {
			lines := strings.Split(out, "\n")
			if last := lines[len(lines)-1]; last == "0" || last == "" {
				t.Errorf("Ubuntu's first boot did not run apt-daily (ExecMainStartTimestampMonotonic %q)", last)
			}
		}
		if !cachedDeb(l, r.Mirror, "buildbot-worker_") {
			t.Errorf("no buildbot-worker package in the lab's apt cache under %s", r.Mirror)
		}
		t.Logf("%s: apt-get update + install buildbot-worker: %.1fs\n%s", r.Name, time.Since(begin).Seconds(), out)
	})

	t.Run("reboot changes the boot ID", func(t *testing.T) {
		begin := time.Now()
		rebootChangesBootID(t, c, other.id, func() (string, error) {
			return sshRun(other.addr, r.User, key.signer, other.hostKeys, "cat /proc/sys/kernel/random/boot_id")
		})
		t.Logf("%s: reboot to SSH: %.1fs", r.Name, time.Since(begin).Seconds())
	})
}

// cachedDeb reports whether the lab's apt cache holds a package whose file
// name starts with prefix, fetched from mirror's host.
func cachedDeb(l *labtest.Lab, mirror, prefix string) bool {
	u, err := url.Parse(mirror)
	if err != nil {
		return false
	}
	found := false
	_ = filepath.WalkDir(filepath.Join(l.Options.CacheDir, "apt", u.Host), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), prefix) && strings.HasSuffix(d.Name(), ".deb") {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}
