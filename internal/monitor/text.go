package monitor

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteText writes the snapshot as the fleet's text block.
func WriteText(w io.Writer, s Snapshot) error {
	var b strings.Builder
	fmt.Fprintf(&b, "---- ratefleet %s (elapsed %s) ----\n", s.At.Format("15:04:05"), s.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "total successful:  %d\n", s.Successful)
	fmt.Fprintf(&b, "total failed:      %d (in the graveyard)\n", s.Failed)
	fmt.Fprintf(&b, "throughput:        %.2f req/s (last 5 s)   %.2f (last min)   %.2f (since start)\n", s.Rate5s, s.Rate1m, s.RateAll)
	fmt.Fprintf(&b, "average latency:   %.1f ms   p50 %d ms   p99 %d ms   max %d ms\n", s.LatencyMean, s.LatencyP50, s.LatencyP99, s.LatMax)
	q := s.Queue
	fmt.Fprintf(&b, "queue sizes:       main %d   DLQ %d   graveyard %d   (awaiting ack %d)\n", q.Waiting, q.Redelivery, q.Graveyard, q.AwaitingAck)
	fmt.Fprintf(&b, "average queues:    main %.1f   DLQ %.1f   graveyard %.1f\n", q.AvgWaiting, q.AvgRedelivery, q.AvgGraveyard)
	if len(q.ByReason) > 0 {
		fmt.Fprintf(&b, "graveyard by reason: %v\n", q.ByReason)
	}
	if q.Err != "" {
		fmt.Fprintf(&b, "queue state unavailable: %s\n", q.Err)
	}
	if q.Stalled != "" {
		fmt.Fprintf(&b, "QUEUE NOT MOVING:  %s\n", q.Stalled)
	}
	if n := s.Results["bury_failed"]; n > 0 {
		fmt.Fprintf(&b, "WARNING:           the graveyard refused %d entries; those requests stay in the queue (is the graveyard stream full?)\n", n)
	}
	if failed := failedAttempts(s.Results); failed != "" {
		fmt.Fprintf(&b, "failed attempts:   %s\n", failed)
	}
	if len(s.Keys) > 0 {
		fmt.Fprintf(&b, "%-8s %-22s %8s %8s %5s %5s %6s %6s %8s %9s  %s\n", "key", "holder", "sent", "ok", "429", "400", "L ms", "lag ms", "evidence", "free in", "state")
		for _, k := range s.Keys {
			state := "idle"
			switch {
			case k.Unusable:
				state = "UNUSABLE: " + k.Reason
			case k.Holder != "":
				state = "held since " + k.Since.Format("15:04:05")
			}
			holder := k.Holder
			if holder == "" {
				holder = "-"
			}
			free := "-"
			if k.Holder != "" && !k.NextFree.IsZero() {
				free = fmt.Sprintf("%dms", max(k.NextFree.Sub(s.At).Milliseconds(), 0))
			}
			fmt.Fprintf(&b, "%-8s %-22s %8d %8d %5d %5d %6.0f %6.0f %8d %9s  %s\n", k.Name, holder, k.Sent, k.OK, k.RateLimited, k.BadNonce, k.MaxDelayMs, k.LagMs, k.Evidence, free, state)
		}
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
	fmt.Fprintf(&b, "workers:           %d active, %d standing by, %d stopped or silent\n", active, standby, gone)
	_, err := io.WriteString(w, b.String())
	return err
}

func failedAttempts(results map[string]uint64) string {
	var parts []string
	for _, r := range []string{"rate_limited", "bad_nonce", "server_error", "timeout", "conn_error", "key_unusable", "expired", "malformed", "buried"} {
		if n := results[r]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r, n))
		}
	}
	return strings.Join(parts, "   ")
}
