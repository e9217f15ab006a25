package notify

import (
	"math/rand/v2"
	"time"
)

// Backoff defaults: the first retry waits about 0.5 s, doubling up to 60 s.
const (
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffCap  = 60 * time.Second
)

// backoff computes retry delays: exponential from base to cap, with jitter
// so that many sinks (or many daemons behind one receiver) do not retry in
// step. Attempt 1 is the first retry.
type backoff struct {
	base, cap time.Duration
}

func (b backoff) delay(attempt int) time.Duration {
	d := b.base
	for i := 1; i < attempt && d < b.cap; i++ {
		d *= 2
	}
	if d > b.cap {
		d = b.cap
	}
	// Equal jitter: between d/2 and d.
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(rand.Int64N(int64(half)+1))
}
