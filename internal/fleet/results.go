package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// ResultCheck compares the results stream with the simulator's own record of the
// request ids it answered 200.
type ResultCheck struct {
	// Results is how many results the stream holds, Distinct for how many ids.
	Results  uint64 `json:"results"`
	Distinct uint64 `json:"distinct"`
	// Served and Buried count the distinct ids by outcome (the first result).
	Served uint64 `json:"served"`
	Buried uint64 `json:"buried"`
	// Repeated counts ids with more than one result.
	Repeated uint64 `json:"repeated"`
	// Unmatched counts ids served 200 by the simulator without a served result,
	// or with a served 200 result the simulator never answered.
	Unmatched uint64 `json:"unmatched"`
}

// CheckResults reads every result and the simulator's ids and compares them.
func CheckResults(ctx context.Context, js jetstream.JetStream, sc *streams.Config, exchangeURL string) (ResultCheck, error) {
	var c ResultCheck
	cons, err := js.OrderedConsumer(ctx, sc.Results.Stream.Name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return c, fmt.Errorf("read results: %w", err)
	}
	first := map[string]wire.Result{}
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return c, fmt.Errorf("read results: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if m.Headers().Get(wire.HeaderPart) != "" {
				continue // a part of a large body, not a result
			}
			r, err := wire.DecodeResult(m.Data())
			if err != nil {
				return c, err
			}
			c.Results++
			if _, seen := first[r.ID]; seen {
				c.Repeated++
				continue
			}
			first[r.ID] = r
		}
		if batch.Error() != nil {
			return c, fmt.Errorf("read results: %w", batch.Error())
		}
		if n == 0 {
			break
		}
	}
	c.Distinct = uint64(len(first))

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, exchangeURL+"/stats?ids=1", nil)
	if err != nil {
		return c, err
	}
	cl := &http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return c, fmt.Errorf("exchange ids: %w", err)
	}
	defer resp.Body.Close()
	var st exchange.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return c, fmt.Errorf("exchange ids: %w", err)
	}
	answered := map[string]bool{}
	for _, id := range st.IDs {
		answered[id] = true
		if r, ok := first[id]; !ok || !r.OK() {
			c.Unmatched++
		}
	}
	for id, r := range first {
		switch {
		case r.Outcome == wire.Served:
			c.Served++
			if r.OK() && !answered[id] {
				c.Unmatched++
			}
		default:
			c.Buried++
		}
	}
	return c, nil
}
