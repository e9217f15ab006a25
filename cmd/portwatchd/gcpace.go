package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// The daemon paces its own garbage collection: a collection when the heap
// has grown to twice what the last one left live (the runtime's GOGC=100),
// checked after each look, where the daemon allocates. The runtime's own
// pacing does the same, but also forces a collection every two minutes
// whatever the heap did; a daemon that wakes every reconcile_interval
// allocates little between two of them, and those forced collections were
// a quarter of its idle CPU (bench/idle: the daemon's CPU sampled every
// 250 ms shows each look at about 1.8 ms, and the look with the forced
// collection at 11 ms). A memory limit well above that heap stands in for
// the check between looks: what a burst allocates meanwhile (a reload, a
// storm, a scrape of metrics.listen) is collected when it reaches it.
//
// GOGC or GOMEMLIMIT in the environment leave the runtime's pacing in
// force: a host's own settings win.

// gcLimitFloor is the least memory limit set: below it, the daemon's own
// memory (about 20 MiB on a host with a thousand listeners) is too close.
const gcLimitFloor = 64 << 20

// gcLimitStep is the memory limit's granularity.
const gcLimitStep = 4 << 20

// gcMinGrowth is the least the heap grows by before a collection, as
// the runtime's minimum heap of 4 MiB.
const gcMinGrowth = 4 << 20

// gcPacer collects when the heap has doubled since the last collection.
type gcPacer struct {
	on      bool
	running atomic.Bool // a collection started by check is under way
	samples []metrics.Sample
	limit   int64 // the memory limit last set
}

// Samples read by check, in this order.
const (
	gcLive    = "/gc/heap/live:bytes"
	gcObjects = "/memory/classes/heap/objects:bytes"
	gcTotal   = "/memory/classes/total:bytes"
	gcFreed   = "/memory/classes/heap/released:bytes"
)

// newGCPacer takes the pacing over from the runtime, unless the
// environment sets it.
func newGCPacer() *gcPacer {
	p := &gcPacer{samples: []metrics.Sample{{Name: gcLive}, {Name: gcObjects}, {Name: gcTotal}, {Name: gcFreed}}}
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return p
	}
	p.on = true
	p.check() // the limit before the collector's own trigger goes
	debug.SetGCPercent(-1)
	return p
}

// check starts a collection when the heap has doubled since the last one,
// and sets the memory limit from what is in use now. It costs a read of
// four runtime metrics. A nil pacer does nothing.
func (p *gcPacer) check() {
	if p == nil || !p.on {
		return
	}
	metrics.Read(p.samples)
	live, objects := int64(p.samples[0].Value.Uint64()), int64(p.samples[1].Value.Uint64())
	mapped := int64(p.samples[2].Value.Uint64() - p.samples[3].Value.Uint64())
	// Twice what is mapped once the heap has doubled: room for a burst
	// between two looks without a collection for each allocation.
	limit := max(2*(mapped-objects+2*live), gcLimitFloor)
	limit = (limit + gcLimitStep - 1) &^ (gcLimitStep - 1) // not a new limit for every look's few allocations
	if limit != p.limit {
		debug.SetMemoryLimit(limit)
		p.limit = limit
	}
	if objects < live+max(live, gcMinGrowth) || p.running.Swap(true) {
		return
	}
	// In the background, as the runtime's own collections: the loop goes
	// on while it marks.
	go func() {
		defer p.running.Store(false)
		runtime.GC()
	}()
}
