package monitor

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// WriteText writes the snapshot as the fleet's text block: a label column and
// value columns, then one row a key, every column aligned to its widest cell.
// What came from NATS (key names, worker ids, reasons, errors) is made
// cli.Printable: a terminal obeys no escape sequence it holds.
func WriteText(w io.Writer, s Snapshot) error {
	var b strings.Builder
	fmt.Fprintf(&b, "---- ratefleet %s (elapsed %s) ----\n", s.At.Format("15:04:05"), s.Elapsed.Round(time.Second))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }
	f := func(format string, v ...any) string { return fmt.Sprintf(format, v...) }
	q := s.Queue
	row("total successful:", f("%d", s.Successful))
	row("total failed:", f("%d", s.Failed), "(in the graveyard)")
	row("throughput:", f("%.2f req/s last 5 s", s.Rate5s), f("%.2f last min", s.Rate1m), f("%.2f since start", s.RateAll))
	row("latency:", f("mean %.1f ms", s.LatencyMean), f("p50 %d ms", s.LatencyP50), f("p99 %d ms", s.LatencyP99), f("max %d ms", s.LatMax))
	row("queues now:", f("waiting %d", q.Waiting), f("retry %d", q.Redelivery), f("graveyard %d", q.Graveyard), f("awaiting ack %d", q.AwaitingAck))
	row("queues average:", f("waiting %.1f", q.AvgWaiting), f("retry %.1f", q.AvgRedelivery), f("graveyard %.1f", q.AvgGraveyard))
	if len(q.ByReason) > 0 {
		reasons := make([]string, 0, len(q.ByReason))
		for r := range q.ByReason {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		var cells []string
		for _, r := range reasons {
			cells = append(cells, f("%s %d", cli.Printable(r), q.ByReason[r]))
		}
		row(append([]string{"graveyard by reason:"}, cells...)...)
	}
	if failed := failedAttempts(s.Results); failed != "" {
		row("failed attempts:", failed)
	}
	var active, standby, gone int
	for _, wk := range s.Workers {
		switch wk.State {
		case "active":
			active++
		case "standby":
			standby++
		default:
			gone++
		}
	}
	row("workers:", f("%d active", active), f("%d standing by", standby), f("%d stopped or silent", gone))
	if err := tw.Flush(); err != nil {
		return err
	}
	if q.Err != "" {
		fmt.Fprintf(&b, "queue state unavailable: %s\n", cli.Printable(q.Err))
	}
	if q.Stalled != "" {
		fmt.Fprintf(&b, "QUEUE NOT MOVING: %s\n", q.Stalled)
	}
	if n := s.Results["bury_failed"]; n > 0 {
		fmt.Fprintf(&b, "WARNING: the graveyard refused %d entries; those requests stay in the queue (is the graveyard stream full?)\n", n)
	}
	if len(s.Keys) > 0 {
		tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "key\tstate\tholder\tsince\tsent\tok\t429\t400\t429 life\tL ms\tlag ms\tbusy %\tevidence\tfree in ms")
		for _, k := range s.Keys {
			since, free := "-", "-"
			if k.Holder != "" {
				since = k.Since.Format("15:04:05")
				if !k.NextFree.IsZero() {
					free = fmt.Sprint(max(k.NextFree.Sub(s.At).Milliseconds(), 0))
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%d\t%s\n", cli.Printable(k.Name), cli.Printable(k.State), orDash(cli.Printable(k.Holder)), since,
				k.Sent, k.OK, k.RateLimited, k.BadNonce, k.Count429Lifetime, k.MaxDelayMs, k.LagMs, 100*k.BusyShare, k.Evidence, free)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, k := range s.Keys {
			if k.Reason != "" {
				fmt.Fprintf(&b, "%s %s: %s\n", cli.Printable(k.Name), cli.Printable(k.State), cli.Printable(k.Reason))
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func failedAttempts(results map[string]uint64) string {
	var parts []string
	for _, r := range append(stats.AttemptResults()[1:], stats.ResultExpired, stats.ResultMalformed, stats.ResultNotAllowed, stats.ResultMaxDeliveries) {
		if n := results[r]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r, n))
		}
	}
	return strings.Join(parts, "   ")
}
