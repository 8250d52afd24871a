// Package monitor builds the fleet's view and shows it.
//
// Collecting and presenting are separate. The Collector (collect.go) reads the
// workers' reports from the stats stream (reports.go) and, on each Snapshot, the
// state NATS holds: the work queue, the graveyard and the two key buckets (state.go).
// A Snapshot (snapshot.go) is a plain value; the presenters only read it: the text
// block and JSON lines (text.go), Prometheus metrics (metrics.go) and the live web
// page (server.go, web/). Watch (watch.go) is the loop that ties them together.
//
// Reports carry cumulative counters and the stats stream keeps the last report of
// every worker, so the fleet's totals are the sum of the latest report of every
// worker ever seen: a monitor started late sees the whole fleet, a worker that stops
// or dies keeps its counts, and totals never go down. Latency percentiles come from
// the workers' HDR histograms merged into one, never from averaged percentiles.
// Throughput is the difference of successful totals between two instants divided
// by the time between them.
package monitor
