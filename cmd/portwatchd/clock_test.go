package main

import (
	"context"
	"testing"
	"time"
)

func TestLoopClock(t *testing.T) {
	const period = 20 * time.Millisecond
	for _, timerfd := range []bool{true, false} {
		name := map[bool]string{true: "timerfd", false: "ticker"}[timerfd]
		clock := func(ctx context.Context) *loopClock {
			c := newClock(ctx, period, timerfd)
			if timerfd && c.f == nil {
				t.Fatal("no timerfd: timerfd_create failed on this host")
			}
			return c
		}
		// waitIn returns what c.wait returns, or fails when it has not
		// returned within d.
		waitIn := func(t *testing.T, c *loopClock, d time.Duration) (ok, returned bool) {
			t.Helper()
			done := make(chan bool, 1)
			go func() {
				_, ok := c.wait()
				done <- ok
			}()
			select {
			case ok := <-done:
				return ok, true
			case <-time.After(d):
				return false, false
			}
		}

		t.Run(name+"/ticks", func(t *testing.T) {
			c := clock(context.Background())
			defer c.Stop()
			// Every period: three ticks take at least three periods.
			start := time.Now()
			for i := range 3 {
				if _, ok := c.wait(); !ok {
					t.Fatalf("wait %d: false, want a tick", i)
				}
			}
			if el := time.Since(start); el < 3*period-5*time.Millisecond {
				t.Errorf("3 ticks in %v, want at least 3 periods of %v", el, period)
			}
			// Reset to an hour: no tick; back to the period: ticks.
			if err := c.Reset(time.Hour); err != nil {
				t.Fatal(err)
			}
			if ok, returned := waitIn(t, c, 5*period); returned {
				t.Fatalf("wait after Reset(1h) returned (%v) within 5 periods, want no tick", ok)
			}
			if err := c.Reset(period); err != nil {
				t.Fatal(err)
			}
			// The wait started above still waits: it or the one below takes the
			// next tick, the other the tick after.
			time.Sleep(3 * period)
			if ok, returned := waitIn(t, c, 5*time.Second); !ok || !returned {
				t.Fatalf("wait after Reset(period): ok %v returned %v, want a tick", ok, returned)
			}
		})

		t.Run(name+"/stop", func(t *testing.T) {
			c := clock(context.Background())
			if err := c.Reset(time.Hour); err != nil {
				t.Fatal(err)
			}
			done := make(chan bool)
			go func() {
				_, ok := c.wait()
				done <- ok
			}()
			time.Sleep(period)
			c.Stop()
			c.Stop() // again: nothing
			select {
			case ok := <-done:
				if ok {
					t.Error("wait ended by Stop returned a tick")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("wait still blocked 5s after Stop")
			}
		})

		t.Run(name+"/ctx", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			c := clock(ctx)
			defer c.Stop()
			if err := c.Reset(time.Hour); err != nil {
				t.Fatal(err)
			}
			time.AfterFunc(period, cancel)
			for i := range 2 { // the wait in progress, and every one after
				if ok, returned := waitIn(t, c, 5*time.Second); ok || !returned {
					t.Fatalf("wait %d after ctx done: ok %v returned %v, want false at once", i, ok, returned)
				}
			}
		})
	}
}
