package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/pull"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// fetchWait bounds the one pull a session leaves waiting on the server when
// none of its queues has a request: short, so a request arriving on another of
// its queues waits at most this long to be seen.
const fetchWait = 250 * time.Millisecond

// consumers checks once per process that the requests stream's consumers
// exist, and hands them to the sessions whose keys may serve them.
type consumers struct {
	// Set once.
	js     jetstream.JetStream
	stream string
	all    []streams.RouteConsumer // of the worker's keys, urgent first

	mu      sync.Mutex
	opened  map[string]bool      // consumers found, by durable name
	told    map[string]bool      // missing consumers already logged
	gathers map[string]*gatherer // by durable name, made on first use
}

// newConsumers opens the consumers of requests any key may send, which every
// fleet has, so a worker started before `streams apply` fails at once.
func newConsumers(ctx context.Context, js jetstream.JetStream, sc *streams.Config, ks []keys.Key) (*consumers, error) {
	withRoutes := *sc
	withRoutes.Routes = keys.RoutesOf(ks)
	c := &consumers{js: js, stream: sc.Requests.Stream.Name, all: withRoutes.RouteConsumers(), opened: map[string]bool{}, told: map[string]bool{}, gathers: map[string]*gatherer{}}
	for _, rc := range c.all {
		if rc.Route.Kind != wire.RouteAny {
			continue
		}
		if err := c.open(ctx, rc); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// open checks that rc's consumer exists on the server.
func (c *consumers) open(ctx context.Context, rc streams.RouteConsumer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opened[rc.Durable] {
		return nil
	}
	if _, err := c.js.Consumer(ctx, c.stream, rc.Durable); err != nil {
		return fmt.Errorf("open consumer %s: %w", rc.Durable, err)
	}
	c.opened[rc.Durable] = true
	return nil
}

// queues returns what key k's session pulls from: the consumers of every route
// k may serve, urgent ones first. A consumer missing on the server (the admin
// has not applied the keys file's routes: `streams apply --keys-file`) is left
// out until the key's next session, and told once per process: requests
// published to its route wait in the stream until the admin declares it.
func (c *consumers) queues(ctx context.Context, k keys.Key, rec *stats.Recorder, log *slog.Logger) (*queues, error) {
	p, err := pull.New(c.js)
	if err != nil {
		return nil, err
	}
	q := &queues{rec: rec, log: log, stream: c.stream, puller: p}
	for _, rc := range c.all {
		if !k.Serves(rc.Route) {
			continue
		}
		if err := c.open(ctx, rc); err != nil {
			if c.tell(rc.Durable) {
				log.Info("no consumer for this route yet: requests routed to it are served once the admin declares it (streams apply --keys-file)",
					"priority", rc.Priority, "route", rc.Route.Token(), "err", err)
			}
			continue
		}
		g, err := c.gatherer(rc.Durable)
		if err != nil {
			return nil, err
		}
		s := source{rc: rc, g: g}
		if rc.Priority == wire.Urgent {
			q.urgent.srcs = append(q.urgent.srcs, s)
		} else {
			q.batch.srcs = append(q.batch.srcs, s)
		}
	}
	return q, nil
}

// gatherer returns the gatherer of the consumer durable, shared by the
// worker's sessions.
func (c *consumers) gatherer(durable string) (*gatherer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.gathers[durable]; g != nil {
		return g, nil
	}
	g, err := newGatherer(c.js, c.stream, durable, gatherWindow)
	if err != nil {
		return nil, err
	}
	c.gathers[durable] = g
	return g, nil
}

// close gives back the requests the gatherers hold; once the sessions ended.
func (c *consumers) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.gathers {
		g.close()
	}
}

// tell reports whether the missing consumer durable is yet to be logged.
func (c *consumers) tell(durable string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := !c.told[durable]
	c.told[durable] = true
	return first
}

// source is one consumer a session pulls from: its looks go through the
// worker's gatherer of that consumer, its waits through the session's own pulls.
type source struct {
	rc streams.RouteConsumer
	g  *gatherer
}

// queues is one session's view of the requests it may take, and the order it
// takes them in: urgent before batch, except that after wire.BatchEvery-1
// urgent requests in a row it looks at its batch queues first, so while both
// wait, at least one in every wire.BatchEvery requests it takes is a batch one.
// Within a priority it takes its queues (its key's, its account's, each
// label's, any key's) in turn, starting after the one it last took from: a
// queue of n of that priority is looked at first at least once in every n
// takes of the priority. Only its session uses it.
type queues struct {
	rec    *stats.Recorder
	log    *slog.Logger
	stream string
	puller *pull.Puller

	urgent, batch ring
	streak        int // urgent requests taken since the last batch one
	turn          int // which queue the next idle wait is on
}

// ring is the queues of one priority, taken in turn.
type ring struct {
	srcs []source
	next int // where the next look starts
}

// order returns the queues, starting at next.
func (r *ring) order() []source {
	if len(r.srcs) == 0 {
		return nil
	}
	i := r.next % len(r.srcs)
	return append(append([]source(nil), r.srcs[i:]...), r.srcs[:i]...)
}

// took moves next past the queue named durable.
func (r *ring) took(durable string) {
	for i, s := range r.srcs {
		if s.rc.Durable == durable {
			r.next = i + 1
		}
	}
}

// lead returns how long before its key may send the session looks for its next
// request: pullLead, and gatherWindow more while the worker's looks on one of
// its queues gather (gatherer.gathering), so that a look held for the others'
// still brings its request before the slot.
func (q *queues) lead() time.Duration {
	for _, r := range []*ring{&q.urgent, &q.batch} {
		for _, s := range r.srcs {
			if s.g.gathering() {
				return pullLead + gatherWindow
			}
		}
	}
	return pullLead
}

// next waits for one request until ctx ends, pulling only when asked: a request
// waits in its queue, where any key that may serve it can take it, until a key
// is about to be able to send it. A message it returns is the caller's to
// handle or give back.
func (q *queues) next(ctx context.Context) (jetstream.Msg, error) {
	all := append(append([]source(nil), q.urgent.srcs...), q.batch.srcs...)
	if len(all) == 0 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	for {
		for _, s := range q.order() {
			m, err := q.pull(ctx, s, 0)
			if m != nil || err != nil {
				return m, err
			}
		}
		// Every queue is empty: wait on one, in turn, then look at all again.
		s := all[q.turn%len(all)]
		q.turn++
		m, err := q.pull(ctx, s, fetchWait)
		if m != nil || err != nil {
			return m, err
		}
	}
}

// order returns the queues in the order to look at them now.
func (q *queues) order() []source {
	if q.streak >= wire.BatchEvery-1 {
		return append(q.batch.order(), q.urgent.order()...)
	}
	return append(q.urgent.order(), q.batch.order()...)
}

// pull asks s for one request, waiting up to wait for one to arrive (not at all
// when 0; the look then goes with those of the worker's other keys where they
// come close together, gatherer.hold). It returns nil and no error when there
// was none; an error only when ctx ended.
func (q *queues) pull(ctx context.Context, s source, wait time.Duration) (jetstream.Msg, error) {
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var (
		m   jetstream.Msg
		err error
	)
	if wait > 0 || !s.g.hold(time.Now()) {
		m, err = q.puller.Next(ctx, q.stream, s.rc.Durable, wait)
	} else {
		m, err = s.g.take(ctx)
	}
	switch {
	case m != nil:
		if ctx.Err() != nil {
			_ = m.Nak() // the session ended meanwhile: back to the queue at once
			return nil, ctx.Err()
		}
		q.took(s)
		return m, nil
	case err == nil:
		return nil, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	// Such as no responders, on a node cut off from the consumer's leader.
	q.rec.Count("", stats.ResultPullError)
	q.log.Warn("pull failed; retrying", "consumer", s.rc.Durable, "err", err)
	return nil, sleep(ctx, 250*time.Millisecond, nil)
}

// close gives back the requests delivered and not taken.
func (q *queues) close() { q.puller.Close() }

// took counts a request taken from s.
func (q *queues) took(s source) {
	if s.rc.Priority == wire.Urgent {
		q.urgent.took(s.rc.Durable)
		q.streak++
		return
	}
	q.batch.took(s.rc.Durable)
	q.streak = 0
}
