package lab

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/latentworker/latentworker/lab/realism"
)

// endpointHandler is the EC2 endpoint: the front, behind the realism layer
// when the lab file has a [realism] section.
func endpointHandler(cfg Config, front http.Handler, logf func(string, ...any)) http.Handler {
	if cfg.Realism.Enabled() {
		logf("realism on: %+v", cfg.Realism)
	}
	return realism.Wrap(cfg.Realism, front, logf)
}

// warmMoto makes moto's first EC2 call, in the background; the channel
// gets its result. moto builds its EC2 backend (instance types and
// offerings of every region, the catalogue) on the first call, which then
// takes seconds: the lab pays it during `up`, not a client's first
// DescribeImages.
func warmMoto(ctx context.Context, client *ec2.Client, logf func(string, ...any)) <-chan error {
	done := make(chan error, 1)
	go func() {
		start := time.Now()
		if _, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}}); err != nil {
			done <- fmt.Errorf("moto: first EC2 call: %w", err)
			return
		}
		logf("moto's EC2 warmed up in %.1fs", time.Since(start).Seconds())
		done <- nil
	}()
	return done
}
