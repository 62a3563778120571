package provision

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// rebootPoll is the wait between reconnections while the old boot is still
// up (the machine had not gone down yet when Reboot reconnected).
const rebootPoll = 2 * time.Second

// Reboot reboots the machine c is connected to and returns a client
// connected to the new boot. It reads the boot ID, asks for a reboot
// (sh's reboot command, as root),
// tolerating the connection dropping under it, closes c, and then calls
// redial (normally a Dial with the same Target, whose own retries cover
// the time the machine is down) until the boot ID differs. A reboot is
// detected by the boot ID only, never by waiting a fixed time.
//
// c is closed in every case. On error no client is returned; the error
// says whether the reboot request, the reconnection or ctx failed. A
// redial error (a host-key mismatch, authentication, ctx) ends Reboot.
func Reboot(ctx context.Context, c *Client, sh Shell, redial func(context.Context) (*Client, error)) (*Client, error) {
	return reboot(ctx, c, sh, redial, sh.Reboot(), rebootPoll)
}

func reboot(ctx context.Context, c *Client, sh Shell, redial func(context.Context) (*Client, error), cmd string, poll time.Duration) (*Client, error) {
	addr := c.Addr()
	before, err := c.BootID(ctx, sh)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reboot %s: %w", addr, err)
	}
	err = c.Run(ctx, cmd, nil, nil, nil)
	c.Close()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("reboot %s: %w", addr, context.Cause(ctx))
	}
	// A status is a refusal (sudo, systemd). Anything else is the
	// connection or the command going away with the old boot.
	var ee *ExitError
	if errors.As(err, &ee) && ee.Signal == "" {
		return nil, fmt.Errorf("reboot %s: %w", addr, err)
	}
	for {
		nc, err := redial(ctx)
		if err != nil {
			return nil, fmt.Errorf("reboot %s: reconnect: %w", addr, err)
		}
		id, err := nc.BootID(ctx, sh)
		if err == nil && id != before {
			return nc, nil
		}
		nc.Close()
		// The same boot ID: the machine is not down yet. An error: it is
		// going down under us. Either way, wait and reconnect.
		if cause := sleep(ctx, poll); cause != nil {
			return nil, fmt.Errorf("reboot %s: boot ID still %s: %w", addr, before, cause)
		}
	}
}
