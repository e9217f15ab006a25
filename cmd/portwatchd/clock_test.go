package main

import (
	"context"
	"testing"
	"time"
)

func TestLoopClock(t *testing.T) {
	const period = 20 * time.Millisecond
	for _, tc := range []struct {
		name  string
		clock func() *loopClock
	}{
		{"timerfd", func() *loopClock {
			c := newLoopClock(period)
			if c.f == nil {
				t.Fatal("newLoopClock fell back to a Ticker: timerfd_create failed on this host")
			}
			return c
		}},
		{"ticker", func() *loopClock { return newTickerClock(period) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.clock()
			defer c.Stop()
			ctx := context.Background()

			// Ticks every period: three take at least three periods.
			start := time.Now()
			for i := range 3 {
				if _, ok := c.wait(ctx); !ok {
					t.Fatalf("wait %d: false, want a tick", i)
				}
			}
			if el := time.Since(start); el < 3*period-5*time.Millisecond {
				t.Errorf("3 ticks in %v, want at least 3 periods of %v", el, period)
			}

			// Reset to an hour: no tick, and a done ctx ends the wait.
			if err := c.Reset(time.Hour); err != nil {
				t.Fatal(err)
			}
			short, cancel := context.WithTimeout(ctx, 3*period)
			if now, ok := c.wait(short); ok {
				t.Errorf("wait after Reset(1h) ticked at %v, want none until its ctx ends", now)
			}
			cancel()

			// Back to the short period: it ticks again.
			if err := c.Reset(period); err != nil {
				t.Fatal(err)
			}
			if _, ok := c.wait(ctx); !ok {
				t.Fatal("wait after Reset(period): false, want a tick")
			}

			// Stop ends a wait in progress.
			if err := c.Reset(time.Hour); err != nil {
				t.Fatal(err)
			}
			done := make(chan bool)
			go func() {
				_, ok := c.wait(ctx)
				done <- ok
			}()
			time.Sleep(period)
			c.Stop()
			select {
			case ok := <-done:
				if ok {
					t.Error("wait ended by Stop returned a tick")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("wait still blocked 5s after Stop")
			}
		})
	}
}
