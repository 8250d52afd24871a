// Package procs keeps a process on as few processors (GOMAXPROCS) as its CPU use
// needs. Go's scheduler, given more processors than it has work for, wakes
// threads to look for work on the idle ones and puts them back to sleep: in a
// worker sending a few thousand small requests a second, with goroutines waking
// each other for every one of them, those wake-ups cost 11 to 15 % of its CPU
// (docs/operating.md). One processor takes them out for a process that uses
// less than about half a core; a busier one gets more, up to what the runtime
// chose at start. Once tuned, the runtime no longer follows a change of the
// container's CPU limit by itself.
package procs

import (
	"context"
	"runtime"
	"time"
)

// EnvVar is the environment variable that, when set, fixes the processors: the
// tuner then leaves GOMAXPROCS to it.
const EnvVar = "GOMAXPROCS"

// Config says how the tuner decides. The zero value of each field takes its
// default.
type Config struct {
	// Max is the most processors the tuner gives; the runtime's GOMAXPROCS at
	// start when 0.
	Max int
	// Interval is how often CPU use is read; DefaultInterval when 0.
	Interval time.Duration
	// Up is the share of its processors a process may use before it gets one
	// more; DefaultUp when 0.
	Up float64
	// Down is the share of one processor fewer under which the process must stay
	// for DownAfter readings in a row to give one back; DefaultDown when 0.
	Down float64
	// DownAfter is how many readings in a row under Down give one back;
	// DefaultDownAfter when 0.
	DownAfter int
}

// Defaults of Config.
const (
	DefaultInterval  = time.Second
	DefaultUp        = 0.7
	DefaultDown      = 0.5
	DefaultDownAfter = 5
)

func (c Config) withDefaults() Config {
	if c.Max <= 0 {
		c.Max = runtime.GOMAXPROCS(0)
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Up <= 0 {
		c.Up = DefaultUp
	}
	if c.Down <= 0 {
		c.Down = DefaultDown
	}
	if c.DownAfter <= 0 {
		c.DownAfter = DefaultDownAfter
	}
	return c
}

// Tuner decides the processors from readings of CPU use. It starts at Max, so
// a process is never slower than untuned before its first readings. It is not
// safe for concurrent use.
type Tuner struct {
	cfg   Config
	procs int
	low   int // readings in a row under Down
}

// NewTuner returns a tuner at cfg.Max processors.
func NewTuner(cfg Config) *Tuner {
	cfg = cfg.withDefaults()
	return &Tuner{cfg: cfg, procs: cfg.Max}
}

// Procs returns the processors decided so far.
func (t *Tuner) Procs() int { return t.procs }

// Next takes the CPU time the process used over elapsed (of wall time) and
// returns the processors it should run on: one more at once when it used more
// than Up of those it has, since a process short of processors cannot show how
// many more it needs; one fewer once it has used less than Down of one fewer
// for DownAfter readings in a row.
func (t *Tuner) Next(used, elapsed time.Duration) int {
	if elapsed <= 0 {
		return t.procs
	}
	cores := used.Seconds() / elapsed.Seconds()
	switch {
	case cores > t.cfg.Up*float64(t.procs) && t.procs < t.cfg.Max:
		t.procs++
		t.low = 0
	case t.procs > 1 && cores < t.cfg.Down*float64(t.procs-1):
		t.low++
		if t.low >= t.cfg.DownAfter {
			t.procs--
			t.low = 0
		}
	default:
		t.low = 0
	}
	return t.procs
}

// Auto reports whether the tuner may run: not when the environment that getenv
// reads sets GOMAXPROCS, and not where the process's CPU time cannot be read.
func Auto(getenv func(string) string) bool {
	_, ok := cpuTime()
	return getenv(EnvVar) == "" && ok
}

// Run tunes the process's GOMAXPROCS from its CPU use until ctx ends, then puts
// back the processors it started with. Call it only when Auto allows.
func Run(ctx context.Context, cfg Config) {
	start := runtime.GOMAXPROCS(0)
	t := NewTuner(cfg)
	defer runtime.GOMAXPROCS(start)
	runtime.GOMAXPROCS(t.Procs())
	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	last, _ := cpuTime()
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		used, ok := cpuTime()
		if !ok {
			return
		}
		now := time.Now()
		spent, elapsed := used-last, now.Sub(lastAt)
		last, lastAt = used, now
		if before, n := t.Procs(), t.Next(spent, elapsed); n != before {
			runtime.GOMAXPROCS(n)
		}
	}
}
