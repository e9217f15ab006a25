// Package result holds the figures the benchmark programs exchange as JSON:
// bench/tick prints a Tick, bench/measure writes a Scene.
package result

// Run is the median cost of one one-shot command over the repetitions.
type Run struct {
	Command []string `json:"command"`
	Reps    int      `json:"reps"`
	WallMs  float64  `json:"wall_ms"`    // median wall time, start to exit
	CPUMs   float64  `json:"cpu_ms"`     // median user+sys CPU time (getrusage of the child)
	MaxRSS  int64    `json:"maxrss_kib"` // median peak RSS (ru_maxrss)
	MinWall float64  `json:"min_wall_ms"`
	MaxWall float64  `json:"max_wall_ms"`
	Err     string   `json:"error,omitempty"`
}

// Ratio is portwatchd's figure divided by ss's, from the same run.
type Ratio struct {
	Wall   float64 `json:"wall"`
	CPU    float64 `json:"cpu"`
	MaxRSS float64 `json:"maxrss"`
}

// Tick is what bench/tick measured of a long-lived watcher.
type Tick struct {
	Ticks        int      `json:"ticks"`           // steady ticks measured
	Warm         int      `json:"warm"`            // snapshots taken before measuring
	Listeners    int      `json:"listeners"`       // listeners in the last snapshot
	Unattributed int      `json:"unattributed"`    // of which with no holder
	Holders      int      `json:"holders"`         // process entries in the last snapshot
	FirstWallMs  float64  `json:"first_wall_ms"`   // the cold, first snapshot
	FirstCPUMs   float64  `json:"first_cpu_ms"`    //
	TickCPUMs    float64  `json:"tick_cpu_ms"`     // mean CPU per steady tick (getrusage RUSAGE_SELF delta / ticks)
	TickCPUP50Ms float64  `json:"tick_cpu_p50_ms"` //
	TickCPUP95Ms float64  `json:"tick_cpu_p95_ms"` //
	TickWallMs   float64  `json:"tick_wall_ms"`    // mean wall time per steady tick
	VmRSSWarmKiB int64    `json:"vmrss_warm_kib"`  // /proc/self/status after the warm snapshots
	VmRSSKiB     int64    `json:"vmrss_kib"`       // /proc/self/status after the ticks
	VmHWMKiB     int64    `json:"vmhwm_kib"`       // peak RSS over the whole run, first snapshot included
	HeapInuseKiB int64    `json:"heap_inuse_kib"`  // Go heap in use after the ticks
	GoSysKiB     int64    `json:"go_sys_kib"`      // memory the Go runtime got from the OS
	NumGC        uint32   `json:"num_gc"`          // collections during the steady ticks
	Warnings     []string `json:"warnings,omitempty"`
}

// Scene is every figure of one scene.
type Scene struct {
	Scene        string `json:"scene"`
	Date         string `json:"date"` // UTC, RFC 3339
	Kernel       string `json:"kernel"`
	CPUs         int    `json:"cpus"`
	Setup        string `json:"setup,omitempty"`
	Nice         int    `json:"nice"`           // nice value of the measured commands
	LoadBefore   string `json:"loadavg_before"` // /proc/loadavg: 1, 5, 15 minutes
	LoadAfter    string `json:"loadavg_after"`
	Processes    int    `json:"processes"` // in the scene's PID namespace
	Fds          int    `json:"fds"`       // open descriptors of all of them
	ListenPW     int    `json:"listeners_portwatchd"`
	ListenKernel int    `json:"listeners_kernel"` // from /proc/net: the truth
	ListenSS     int    `json:"listeners_ss"`
	Unattrib     int    `json:"unattributed_portwatchd"`
	Portwatchd   Run    `json:"portwatchd"`
	SS           Run    `json:"ss"`
	Ratio        *Ratio `json:"ratio,omitempty"`
	Tick         *Tick  `json:"tick,omitempty"`
	TickErr      string `json:"tick_error,omitempty"`
}
