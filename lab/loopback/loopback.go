// Package loopback serves the lab's HTTP helpers (the apt cache, the PyPI
// mirror) on loopback addresses only: instances share the host's network
// namespace and reach them there, and nothing else may.
package loopback

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Listen listens on addr, which must be a loopback IP address and port
// ("127.0.0.1:0" picks a free port); what names the server in errors and
// example its usual address.
func Listen(what, addr, example string) (net.Listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("%s: listen address %q: must be a loopback IP and port, like %s", what, addr, example)
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", what, addr, err)
	}
	return ln, nil
}

// Serve answers with h on ln until ctx is done, then shuts down, giving
// transfers in flight a few seconds. It returns nil after ctx ends, and the
// server's error otherwise.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, what string) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: serve on %s: %w", what, ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}
