package worker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/ratefleet/ratefleet/internal/stats"
)

// publishStats publishes the worker's report every StatsInterval until ctx ends.
func (w *Worker) publishStats(ctx context.Context) {
	t := time.NewTicker(w.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.publishReport(ctx, false)
		}
	}
}

// publishFinalStats publishes the last report, marked stopped, so the monitor
// keeps this worker's final counts.
func (w *Worker) publishFinalStats() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w.publishReport(ctx, true)
}

func (w *Worker) publishReport(ctx context.Context, stopped bool) {
	rep, err := w.rec.Report(w.cfg.Now())
	if err != nil {
		w.log.Warn("could not build stats report", "err", err)
		return
	}
	rep.Stopped = stopped
	data, err := json.Marshal(rep)
	if err != nil {
		w.log.Warn("could not encode stats report", "err", err)
		return
	}
	if _, err := w.js.Publish(ctx, stats.Subject(w.cfg.ID), data); err != nil && ctx.Err() == nil {
		w.log.Warn("could not publish stats", "err", err)
	}
}
