package monitor

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

//go:embed web/index.html
var page []byte

// WebHandler serves the live web page at /, the latest snapshot as JSON at
// /api/snapshot (with its age in milliseconds, on the monitor's clock, in the
// Ratefleet-Snapshot-Age-Ms header: the page shows a stale-data banner when it
// grows or a poll fails), the charts' history from history (none when nil) at
// /api/history and Prometheus metrics at /metrics. Every asset is in the binary.
func (m *Metrics) WebHandler(history func() []Point) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/api/snapshot", func(w http.ResponseWriter, _ *http.Request) {
		m.mu.Lock()
		s := m.snap
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if s == nil {
			http.Error(w, `{"error":"no snapshot yet"}`, http.StatusServiceUnavailable)
			return
		}
		now := time.Now
		if m.Now != nil {
			now = m.Now
		}
		w.Header().Set("Ratefleet-Snapshot-Age-Ms", strconv.FormatInt(max(now().Sub(s.At).Milliseconds(), 0), 10))
		_ = json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("/api/history", func(w http.ResponseWriter, _ *http.Request) {
		h := []Point{}
		if history != nil {
			h = history()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(h)
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	return mux
}
