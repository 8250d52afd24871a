// Package host reads how busy the machine's cores are, from the kernel's
// counters (/proc/stat on Linux), and watches for the moments they were busy.
// A worker on a busy machine takes whatever shares the machine with it (an
// upstream, a proxy, NATS) to be late too, by more than its own timers show.
package host

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"time"
)

// statFile is where Linux counts each core's time by what it did.
const statFile = "/proc/stat"

// CPU returns the machine's busy and total CPU time so far, summed over its
// cores, in the kernel's clock ticks; zeros where /proc is not there. The
// busy share of a span is the difference of busy over the difference of
// total.
func CPU() (busy, total uint64) {
	data, err := os.ReadFile(statFile)
	if err != nil {
		return 0, 0
	}
	return ParseStat(data)
}

// ParseStat reads the first line of /proc/stat ("cpu" and its tick counts:
// user, nice, system, idle, iowait, irq, softirq, steal, ...): busy is every
// count but idle and iowait, total all of them. Zeros when data has no such
// line.
func ParseStat(data []byte) (busy, total uint64) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 5 || string(f[0]) != "cpu" {
		return 0, 0
	}
	for i, x := range f[1:] {
		n, err := strconv.ParseUint(string(x), 10, 64)
		if err != nil {
			return 0, 0
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// Watch is a watch on the machine's cores: every Every it reads their
// counters and, when they were at least Share busy since the reading before,
// calls Busy with the time of the reading.
type Watch struct {
	// Share is the busy share of the cores, from 0 to 1, at or above which a
	// span counts as busy.
	Share float64
	// Every is the span of one reading; 250 ms when 0.
	Every time.Duration
	// Read returns the cores' busy and total time so far; CPU when nil.
	Read func() (busy, total uint64)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Busy is told each reading of a busy span; required.
	Busy func(at time.Time)
}

// Run reads the counters until ctx ends. It returns at once where the
// machine has no counters to read (Read returns zeros).
func (w Watch) Run(ctx context.Context) {
	if w.Every <= 0 {
		w.Every = 250 * time.Millisecond
	}
	if w.Read == nil {
		w.Read = CPU
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	busy, total := w.Read()
	if total == 0 {
		return
	}
	t := time.NewTicker(w.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		busy, total = w.step(busy, total)
	}
}

// step takes one reading against the one before (busy0, total0) and returns
// it.
func (w Watch) step(busy0, total0 uint64) (busy, total uint64) {
	busy, total = w.Read()
	if total <= total0 || busy < busy0 {
		return busy, total // no tick yet, or the counters were reset
	}
	if float64(busy-busy0) >= w.Share*float64(total-total0) {
		w.Busy(w.Now())
	}
	return busy, total
}
