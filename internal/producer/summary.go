package producer

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Summary counts what happened to the requests of one run. Every request taken
// from the source ends in exactly one of Published, Duplicates, Failed and
// Unconfirmed; while a run is going, the rest are InFlight.
type Summary struct {
	// Requests were taken from the source.
	Requests int64
	// Published were stored by the stream.
	Published int64
	// Duplicates were acknowledged as already stored (same id within the stream's
	// duplicate window): a retry whose earlier attempt had made it, or an input
	// that repeats an id.
	Duplicates int64
	// Retries counts publish attempts after the first, over all requests.
	Retries int64
	// Failed are not in the stream: refused until their retries ran out, met an
	// error that retrying cannot cure, or were waiting to retry a refusal when
	// the run was interrupted. Each is logged with its id.
	Failed int64
	// Unconfirmed may or may not be in the stream: their last attempt got no
	// answer (before the shutdown grace ended, or before the ack timeout with no
	// retry left). Each is logged with its id.
	Unconfirmed int64
	// Skipped counts bad input lines passed over.
	Skipped int64
	// Elapsed is the run's length, from start until the last request settled.
	Elapsed time.Duration
}

// InFlight returns the requests not settled yet.
func (s Summary) InFlight() int64 {
	return s.Requests - s.Published - s.Duplicates - s.Failed - s.Unconfirmed
}

// Rate returns the requests stored per second over the run.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Published) / s.Elapsed.Seconds()
}

// String returns the summary as an aligned block, one count a line.
func (s Summary) String() string {
	var b strings.Builder
	line := func(name, format string, args ...any) {
		fmt.Fprintf(&b, "%-12s %s\n", name, fmt.Sprintf(format, args...))
	}
	line("requests", "%d", s.Requests)
	line("published", "%d", s.Published)
	line("duplicates", "%d", s.Duplicates)
	line("retried", "%d attempts", s.Retries)
	line("failed", "%d", s.Failed)
	line("unconfirmed", "%d", s.Unconfirmed)
	line("skipped", "%d bad lines", s.Skipped)
	line("elapsed", "%s", s.Elapsed.Round(time.Millisecond))
	line("rate", "%.1f req/s", s.Rate())
	return b.String()
}

// tally holds a run's counters; the request goroutines update it and the progress
// loop and Snapshot read it.
type tally struct {
	requests, published, duplicates, retries, failed, unconfirmed, skipped atomic.Int64
}

func (t *tally) summary(elapsed time.Duration) Summary {
	return Summary{
		Requests:    t.requests.Load(),
		Published:   t.published.Load(),
		Duplicates:  t.duplicates.Load(),
		Retries:     t.retries.Load(),
		Failed:      t.failed.Load(),
		Unconfirmed: t.unconfirmed.Load(),
		Skipped:     t.skipped.Load(),
		Elapsed:     elapsed,
	}
}

// idWriter writes the id of every acknowledged request, one a line. It keeps the
// first write error and drops the rest of the output after it.
type idWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	err error
}

func newIDWriter(w io.Writer) *idWriter {
	if w == nil {
		return nil
	}
	return &idWriter{w: bufio.NewWriter(w)}
}

func (iw *idWriter) write(id string) {
	if iw == nil {
		return
	}
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if iw.err == nil {
		_, iw.err = iw.w.WriteString(id + "\n")
	}
}

func (iw *idWriter) flush() error {
	if iw == nil {
		return nil
	}
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if iw.err == nil {
		iw.err = iw.w.Flush()
	}
	if iw.err != nil {
		return fmt.Errorf("write acknowledged ids: %w", iw.err)
	}
	return nil
}
