package iameval

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

func cacheDir() string {
	if d := os.Getenv("LATENTLAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/latentlab"
}

// TestEvaluator runs the real evaluator: conditions decide, answers pair
// with their requests when many are in flight, a bad check is an Error
// result (not a failed process), and Close ends the process.
func TestEvaluator(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Node")
	}
	for _, b := range []string{"node", "npm"} {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing", b)
			}
			t.Skipf("%s is missing", b)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := Install(ctx, cacheDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	policy := []Policy{{Name: "p", Document: json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:TerminateInstances",
		"Resource":"arn:aws:ec2:eu-west-1:123456789012:instance/*","Condition":{"StringEquals":{"ec2:InstanceType":"t3.small"}}}]}`)}}
	check := func(typ string) Check {
		return Check{Action: "ec2:TerminateInstances", Resource: "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0",
			Account: "123456789012", Context: map[string]any{"ec2:InstanceType": typ}}
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			typ, want := "t3.small", Allowed
			if i%2 == 1 {
				typ, want = "t3.large", ImplicitlyDenied
			}
			res, err := e.Evaluate(ctx, Request{Principal: "arn:aws:iam::123456789012:user/u", Policies: policy, Checks: []Check{check(typ)}})
			if err != nil || len(res) != 1 || res[0].Decision != want {
				t.Errorf("%s: %+v, %v; want %s", typ, res, err, want)
			}
		}()
	}
	wg.Wait()
	res, err := e.Evaluate(ctx, Request{Principal: "arn:aws:iam::123456789012:user/u", Policies: policy,
		Checks: []Check{{Action: "ec2:NoSuchAction", Resource: "*", Account: "123456789012"}}})
	if err != nil || res[0].Decision != Error {
		t.Errorf("an unknown action: %+v, %v; want an Error result", res, err)
	}
	pid := e.PID()
	e.Close()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the evaluator (pid %d) is still running after Close", pid)
	}
	if _, err := e.Evaluate(ctx, Request{}); err == nil {
		t.Error("Evaluate after Close succeeded")
	}
}
