package exchange_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
)

// BenchmarkServer_ManyKeysWithDefaultDelays measures the requests a second the
// simulator answers over loopback with the reference delays (0..50 ms each way), many
// keys and many clients in flight. Each iteration sends a fixed batch, so that
// -benchtime 1x still measures; the result is the req/s metric. A fleet needs about
// 100 a second per five keys; the simulator should answer 5,000 a second on 2 cores.
func BenchmarkServer_ManyKeysWithDefaultDelays(b *testing.B) {
	const (
		nKeys   = 1000
		clients = 512   // in flight at once: at 50 ms a request, at most 10,240 req/s
		batch   = 10000 // requests per iteration
	)
	cfg := exchange.DefaultConfig()
	cfg.Keys = make([]keys.Key, nKeys)
	for i := range cfg.Keys {
		cfg.Keys[i] = keys.New(fmt.Sprintf("bench%d", i), fmt.Sprintf("BENCH-SECRET-%06d", i))
	}
	cfg.Limit = 1000 // load, not the rate limit, is measured here
	s, err := exchange.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Open("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer s.Close(b.Context())
	hc := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients},
	}
	defer hc.CloseIdleConnections()

	// Client c owns the keys k with k % clients == c and sends one request at a
	// time, so that each key's nonces arrive in order.
	base := s.URL() + "/api/request?"
	nonces := make([]int64, nKeys)
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	send := func(k int) {
		nonces[k]++
		q := url.Values{
			"api_key": {cfg.Keys[k].Secret()},
			"nonce":   {strconv.FormatInt(nonces[k], 10)},
			"req_id":  {fmt.Sprintf("%d-%d", k, nonces[k])},
		}
		resp, err := hc.Get(base + q.Encode())
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err.Error())
		}
	}

	start := time.Now()
	for b.Loop() {
		left := atomic.Int64{}
		left.Store(batch)
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				for i := 0; left.Add(-1) >= 0; i++ {
					send(c + clients*(i%((nKeys-c+clients-1)/clients)))
				}
			})
		}
		wg.Wait()
		sent.Add(batch)
	}
	elapsed := time.Since(start)
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed, first: %v", n, sent.Load(), firstErr.Load())
	}
	b.ReportMetric(float64(sent.Load())/elapsed.Seconds(), "req/s")
	b.ReportMetric(0, "ns/op")
}
