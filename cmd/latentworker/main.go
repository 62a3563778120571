// Command latentworker turns a base EC2 AMI into a buildbot latent-worker
// AMI, hands the buildmaster admins what they need to launch it, and sweeps
// up zombie instances. See `latentworker --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	os.Exit(report(os.Stderr, err))
}
