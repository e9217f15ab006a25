package exposure

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Watch sends on the returned channel (capacity one, never blocking) when
// the nftables ruleset of the namespace at nsPath ("" for the caller's)
// changed, at most once per debounce after the last change of a burst: a
// `nft -f` or an iptables-restore is one batch of many messages. The daemon
// re-reads and re-evaluates only then, so its tick costs nothing more. It
// joins the NFNLGRP_NFTABLES multicast group directly rather than through
// github.com/google/nftables' Monitor, which decodes every rule of every
// event (dropping what it does not know) when only the fact of a change is
// needed. The channel closes when ctx ends; joining needs CAP_NET_ADMIN
// (ErrNoCapNetAdmin, wrapped).
func Watch(ctx context.Context, nsPath string, debounce time.Duration) (<-chan struct{}, error) {
	fd, done, err := openNetns(nsPath)
	if err != nil {
		return nil, err
	}
	defer done()
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: fd})
	if err != nil {
		return nil, fmt.Errorf("nftables monitor: %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		c.Close()
		if isPerm(err) {
			return nil, fmt.Errorf("nftables monitor: %w", ErrNoCapNetAdmin)
		}
		return nil, fmt.Errorf("nftables monitor: %w", err)
	}
	raw := make(chan struct{}, 1)
	out := make(chan struct{}, 1)
	go func() {
		<-ctx.Done()
		c.Close() // ends the Receive below
	}()
	go func() {
		defer close(raw)
		for {
			if _, err := c.Receive(); err != nil {
				if ctx.Err() != nil {
					return
				}
				// ENOBUFS: events were lost, which is a change too.
			}
			select {
			case raw <- struct{}{}:
			default:
			}
		}
	}()
	go func() {
		defer close(out)
		var timer <-chan time.Time
		for {
			select {
			case _, ok := <-raw:
				if !ok {
					return
				}
				timer = time.After(debounce)
			case <-timer:
				timer = nil
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, nil
}

func isPerm(err error) bool {
	return os.IsPermission(err) || errors.Is(err, unix.EPERM)
}
