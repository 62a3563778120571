// Command latentworker turns a base EC2 AMI into a buildbot latent-worker
// AMI, hands the buildmaster admins what they need to launch it, and sweeps
// up zombie instances. See `latentworker --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		stopLiveViews() // its last frame stays; plain lines follow
		fmt.Fprintf(os.Stderr, "\nlatentworker: %v: cleaning up (again to exit at once)\n", sig)
		cancel(fmt.Errorf("%w: %v", context.Canceled, sig))
		sig = <-sigs
		fmt.Fprintf(os.Stderr, "\nlatentworker: %v again: exiting without cleaning up\n", sig)
		leftovers.print(os.Stderr)
		os.Exit(exitInterrupted)
	}()
	err := newRoot().ExecuteContext(ctx)
	signal.Stop(sigs)
	os.Exit(report(os.Stderr, err))
}
