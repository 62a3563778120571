package bake_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/lab/labtest"
)

// TestBakeUnderRealism bakes in a lab that behaves like a hard day on AWS:
// 30 % of EC2 calls throttled, 10 % answered 500/503, 5 % carried out with
// their answer lost, new resources NotFound for 5 s, the console empty for
// 5 s after boot, a Xen instance type whose console refuses Latest. The
// bake completes with the product's retry policy, the image boots a
// working worker, and nothing of the run is left but the image.
func TestBakeUnderRealism(t *testing.T) {
	e := setupWith(t, `image_pending = "5s"
[realism]
seed = 7
throttle = 0.3
server_errors = 0.1
lost_answers = 0.05
consistency = "5s"
console_delay = "5s"
latest_nitro_only = true
`)
	e.cfg.AWS.InstanceType = "t2.medium"
	e.ec2 = ec2.NewFromConfig(e.lab.AWS, func(o *ec2.Options) { o.Retryer = awserr.NewRetryer() })
	ctx := context.Background()
	rec := &recorder{t: t, secret: e.password}
	opts := e.options(t, rec)
	opts.TerminateBuilder = true
	start := time.Now()
	res, err := bake.Run(ctx, opts)
	if err != nil {
		t.Fatalf("bake under realism: %v", err)
	}
	t.Logf("bake under realism took %s: %s", time.Since(start).Round(time.Second), res.Manifest.ImageID)
	for _, l := range labtest.RunResources(t, e.lab.EC2(""), res.Manifest.RunID) {
		if !strings.HasPrefix(l, "image ") && !strings.HasPrefix(l, "snapshot ") && !strings.Contains(l, "terminated") {
			t.Errorf("run %s left %s", res.Manifest.RunID, l)
		}
	}
	e.lab.BootAndBuild(t, e2eWorker, res.Manifest.ImageID)
}
