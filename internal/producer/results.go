package producer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

func (s *IDSet) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id]
}

// ResultTally counts what CollectResults wrote.
type ResultTally struct {
	Served, Buried, Missing int
}

// CollectResults writes to w, one JSON line each, the first result of every id
// in ids published since since, until each id has one or ctx ends; it returns
// the counts, Missing being the ids without a result yet.
func CollectResults(ctx context.Context, js jetstream.JetStream, sc *streams.Config, ids *IDSet, since time.Time, w io.Writer) (ResultTally, error) {
	var t ResultTally
	cons, err := js.OrderedConsumer(ctx, sc.Results.Stream.Name, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return t, fmt.Errorf("read results: %w", err)
	}
	out := bufio.NewWriter(w)
	defer out.Flush()
	seen := map[string]bool{}
	want := ids.Len()
	for len(seen) < want {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		switch {
		case ctx.Err() != nil:
			t.Missing = want - len(seen)
			return t, nil
		case errors.Is(err, jetstream.ErrNoMessages), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
			continue
		case err != nil:
			return t, fmt.Errorf("read results: %w", err)
		}
		r, err := wire.DecodeResult(msg.Data())
		if err != nil || !ids.has(r.ID) || seen[r.ID] {
			continue
		}
		seen[r.ID] = true
		if r.Outcome == wire.Served {
			t.Served++
		} else {
			t.Buried++
		}
		out.Write(msg.Data())
		out.WriteByte('\n')
	}
	return t, out.Flush()
}
