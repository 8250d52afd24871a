package monitor

import (
	"cmp"
	"slices"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ratefleet/ratefleet/internal/stats"
)

// incarnation names one run of a worker: a worker restarted under the same id
// starts its counters again, so its runs are counted apart and the first run's
// counts stay in the totals.
type incarnation struct {
	id      string
	started int64 // Unix nanoseconds; time.Time compares badly as a map key
}

// latestReport is the newest report of one incarnation and its decoded latency
// histogram (nil once folded into reports.retired).
type latestReport struct {
	stats.Report
	latency *hdrhistogram.Histogram
}

// reports holds the latest report of every worker incarnation seen. It is not safe
// for concurrent use; the collector guards it.
type reports struct {
	latest map[incarnation]*latestReport
	// retired merges the latency of workers that stopped: their last report is
	// final, so a decoded histogram per departed worker need not be kept.
	retired *hdrhistogram.Histogram
}

func newReports() *reports {
	return &reports{latest: map[incarnation]*latestReport{}, retired: stats.NewLatencyHistogram()}
}

// add keeps r if it is newer than what is held for its incarnation, and reports
// whether it did. A report is newer by Seq, or by At when Seq is equal; nothing
// follows a Stopped report. When the latency cannot be decoded the counters are
// kept with the previous histogram, and the error is returned.
func (rs *reports) add(r stats.Report) (bool, error) {
	inc := incarnation{id: r.Worker, started: r.Started.UnixNano()}
	old, ok := rs.latest[inc]
	if ok && (old.Stopped || r.Seq < old.Seq || (r.Seq == old.Seq && !r.At.After(old.At))) {
		return false, nil
	}
	h, err := r.DecodeLatency()
	if err != nil {
		h = nil
		if ok {
			h = old.latency
		}
	}
	if r.Stopped && h != nil {
		rs.retired.Merge(h)
		h = nil
	}
	rs.latest[inc] = &latestReport{Report: r, latency: h}
	return true, err
}

// fleetView is what the reports say, before the NATS state is folded in.
type fleetView struct {
	results map[string]uint64
	latency *hdrhistogram.Histogram
	keys    map[string]*Key
	workers []Worker
}

// view sums the latest reports. holders maps key names to the worker holding
// their lease, whose report then gives the key's limiter state.
func (rs *reports) view(now time.Time, silentAfter time.Duration, holders map[string]string) fleetView {
	v := fleetView{results: map[string]uint64{}, latency: stats.NewLatencyHistogram(), keys: map[string]*Key{}}
	v.latency.Merge(rs.retired)
	// The key reports that give each key's limiter state, ranked by keyRank.
	source := map[string]keySource{}
	for _, r := range rs.latest {
		for res, n := range r.Results {
			v.results[res] += n
		}
		if r.latency != nil {
			v.latency.Merge(r.latency)
		}
		w := Worker{
			ID: r.Worker, Host: r.Host, PID: r.PID, Started: r.Started, LastReport: r.At,
			InFlight: r.InFlight, Successful: r.Results[stats.ResultOK], State: WorkerStandby,
		}
		for _, kr := range r.Keys {
			k := v.keys[kr.Name]
			if k == nil {
				k = &Key{Name: kr.Name}
				v.keys[kr.Name] = k
			}
			k.Sent += kr.Sent
			k.OK += kr.OK
			k.RateLimited += kr.RateLimited
			k.BadNonce += kr.BadNonce
			if kr.Held {
				w.Keys = append(w.Keys, kr.Name)
				w.State = WorkerActive
			}
			s := keySource{report: kr, at: r.At, holder: holders[kr.Name] == r.Worker && kr.Held, held: kr.Held}
			if best, ok := source[kr.Name]; !ok || s.rank(best) > 0 {
				source[kr.Name] = s
			}
		}
		switch {
		case r.Stopped:
			w.State = WorkerStopped
		case now.Sub(r.At) > silentAfter:
			w.State = WorkerSilent
		}
		v.workers = append(v.workers, w)
	}
	for name, s := range source {
		k := v.keys[name]
		k.MaxDelayMs, k.NextFree, k.Quarantined = s.report.MaxDelayMs, s.report.NextFree, s.report.Quarantined
	}
	slices.SortFunc(v.workers, func(a, b Worker) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), a.Started.Compare(b.Started))
	})
	return v
}

// keySource is one worker's report of a key, as a candidate for the key's
// limiter state.
type keySource struct {
	report stats.KeyReport
	at     time.Time
	holder bool // reported by the worker the lease bucket names
	held   bool
}

// rank orders candidates: the lease holder's report first, then any report that
// holds the key, then the newest.
func (s keySource) rank(o keySource) int {
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	return cmp.Or(cmp.Compare(b(s.holder), b(o.holder)), cmp.Compare(b(s.held), b(o.held)), s.at.Compare(o.at))
}
