package worker

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/internal/stats"
)

// finalReportTimeout bounds the publication of the last report.
const finalReportTimeout = 2 * time.Second

// reporter publishes the worker's report every StatsInterval, and on shutdown a
// last one marked stopped, so the monitor keeps this worker's final counts.
type reporter struct {
	// Set once.
	w *Worker
	loop
}

func newReporter(w *Worker) *reporter {
	return &reporter{w: w, loop: newLoop()}
}

func (r *reporter) start(wg *sync.WaitGroup) {
	r.loop.run(wg, r.run)
}

// shutdown stops the loop and publishes the last report.
func (r *reporter) shutdown() {
	r.loop.stop()
	ctx, cancel := context.WithTimeout(context.Background(), finalReportTimeout)
	defer cancel()
	r.publish(ctx, true)
}

func (r *reporter) run(ctx context.Context) {
	t := time.NewTicker(r.w.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.publish(ctx, false)
		}
	}
}

func (r *reporter) publish(ctx context.Context, stopped bool) {
	w := r.w
	rep, err := w.Report(w.cfg.Now())
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
