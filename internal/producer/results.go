package producer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratefleet/ratefleet/internal/results"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// IDSet collects the ids a producer writes to Config.IDs, one a line.
type IDSet struct {
	mu   sync.Mutex
	ids  map[string]bool
	part []byte
}

// NewIDSet returns an empty set.
func NewIDSet() *IDSet { return &IDSet{ids: map[string]bool{}} }

// Write takes lines of ids.
func (s *IDSet) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.part = append(s.part, p...)
	for {
		i := bytes.IndexByte(s.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		if i > 0 {
			s.ids[string(s.part[:i])] = true
		}
		s.part = s.part[i+1:]
	}
}

// Len returns how many ids the set holds.
func (s *IDSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func (s *IDSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.ids))
	for id := range s.ids {
		out = append(out, id)
	}
	return out
}

// ResultTally counts what Collect wrote.
type ResultTally struct {
	Served, Buried, Missing int
}

// Results gathers the results of the requests a producer publishes, as their
// owner may read them (docs/security.md): the replies on the owner's reply
// subjects from the moment WatchResults is called, and, for an id no reply
// brought, a direct get of its result subject. It creates no consumer.
type Results struct {
	nc    *nats.Conn
	rs    streams.Results
	owner wire.Owner
	sub   *nats.Subscription

	mu      sync.Mutex
	got     map[string][]byte // the first result of each id, as it came
	arrived chan struct{}     // signalled when a result arrives
}

// WatchResults subscribes to owner's reply subjects: call it before
// publishing, so no reply comes first.
func WatchResults(nc *nats.Conn, rs streams.Results, owner wire.Owner) (*Results, error) {
	r := &Results{nc: nc, rs: rs, owner: owner, got: map[string][]byte{}, arrived: make(chan struct{}, 1)}
	subject := rs.ReplyPrefix + "*"
	if owner != wire.Anonymous {
		subject = rs.ReplyPrefix + string(owner) + ".>"
	}
	sub, err := nc.Subscribe(subject, r.reply)
	if err != nil {
		return nil, fmt.Errorf("read results: subscribe to %s: %w", subject, err)
	}
	// Replies may pile up while the producer publishes; those dropped are read
	// from the stream instead.
	_ = sub.SetPendingLimits(-1, 256<<20)
	r.sub = sub
	return r, nil
}

func (r *Results) reply(m *nats.Msg) {
	res, err := wire.DecodeResult(m.Data)
	if err != nil {
		return
	}
	r.mu.Lock()
	if _, ok := r.got[res.ID]; !ok {
		r.got[res.ID] = m.Data
	}
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
}

// Close stops taking replies.
func (r *Results) Close() error { return r.sub.Unsubscribe() }

// Collect writes to w, one JSON line each, the first result of every id in ids
// to arrive, until each id has one or ctx ends; it returns the counts, Missing
// being the ids without a result yet.
func (r *Results) Collect(ctx context.Context, ids *IDSet, w io.Writer) (ResultTally, error) {
	var t ResultTally
	out := bufio.NewWriter(w)
	defer out.Flush()
	want := ids.list()
	seen := map[string]bool{}
	take := func(data []byte) {
		res, err := wire.DecodeResult(data)
		if err == nil && res.Outcome == wire.Served {
			t.Served++
		} else {
			t.Buried++
		}
		if err == nil && res.BodyParts > 0 {
			// A body too large for one message: write the whole of it.
			if body, berr := results.Body(ctx, r.nc, r.rs, r.owner, res); berr == nil {
				res.SetBody(body)
				res.BodyParts, res.BodyDigest = 0, ""
				if whole, eerr := res.Encode(); eerr == nil {
					data = whole
				}
			}
		}
		out.Write(data)
		out.WriteByte('\n')
	}
	every := time.Second // between reads of the stream, doubling to 16 s
	read := time.NewTimer(0)
	defer read.Stop()
	for {
		r.mu.Lock()
		for _, id := range want {
			if data, ok := r.got[id]; ok && !seen[id] {
				seen[id] = true
				take(data)
			}
		}
		r.mu.Unlock()
		if len(seen) == len(want) {
			return t, out.Flush()
		}
		select {
		case <-ctx.Done():
			t.Missing = len(want) - len(seen)
			return t, out.Flush()
		case <-r.arrived:
		case <-read.C:
			for _, id := range want {
				if seen[id] {
					continue
				}
				res, ok, err := results.Get(ctx, r.nc, r.rs, r.owner, id)
				if ctx.Err() != nil {
					break
				}
				if err != nil {
					return t, fmt.Errorf("read results: %w", err)
				}
				if data, err := res.Encode(); ok && err == nil {
					seen[id] = true
					take(data)
				}
			}
			read.Reset(every)
			every = min(2*every, 16*time.Second)
		}
	}
}
