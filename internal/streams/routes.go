package streams

import (
	"slices"
	"strings"

	"github.com/ratefleet/ratefleet/wire"
)

// maxDurable bounds the durable name of streams.yaml's consumer, so a route's
// consumer name (RouteConsumer) stays well inside NATS's limits.
const maxDurable = 32

// RouteConsumer is one durable pull consumer of the requests stream: the
// requests of one priority and one route, and no others. The filters of two
// route consumers never overlap, as a work-queue stream requires, so each
// request goes to exactly one of them.
type RouteConsumer struct {
	// Durable is the consumer's name (Requests.ConsumerName).
	Durable  string
	Priority wire.Priority
	Route    wire.Route
	// Filters are the subjects it takes (Requests.Filters).
	Filters []string
}

// ConsumerName returns the name of the consumer of priority p and route rt:
// streams.yaml's durable ("workers") for batch requests any key may send, the
// only ones ratefleet had before routes, and <durable>_<priority>_<route token>
// for the others ("workers_urgent_label-spot").
func (r Requests) ConsumerName(p wire.Priority, rt wire.Route) string {
	if p == wire.Batch && rt.Kind == wire.RouteAny {
		return r.Consumer.Durable
	}
	return r.Consumer.Durable + "_" + string(p) + "_" + rt.Token()
}

// Filters returns the subjects of the requests of priority p and route rt:
// <requests>.<priority>.<route> (no user) and <requests>.*.<priority>.<route>,
// and for batch requests any key may send also <requests> and <requests>.*,
// the subjects of version 1.
func (r Requests) Filters(p wire.Priority, rt wire.Route) []string {
	base := r.Subject()
	tail := "." + string(p) + "." + rt.Token()
	out := []string{base + tail, base + ".*" + tail}
	if p == wire.Batch && rt.Kind == wire.RouteAny {
		out = append([]string{base, base + ".*"}, out...)
	}
	return out
}

// RouteConsumers returns every consumer of the requests stream, urgent ones
// first (with Consumer.Priorities): for each priority, the one of requests any
// key may send, then one for each of c.Routes (sorted, without repeats). With
// neither priorities nor routes it is one consumer with no filter.
func (c *Config) RouteConsumers() []RouteConsumer {
	routes := []wire.Route{wire.Any}
	for _, r := range c.Routes {
		if !slices.Contains(routes, r) {
			routes = append(routes, r)
		}
	}
	slices.SortStableFunc(routes[1:], func(a, b wire.Route) int { return strings.Compare(a.Token(), b.Token()) })
	priorities := []wire.Priority{wire.Batch}
	if c.Requests.Consumer.Priorities {
		priorities = wire.Priorities()
	}
	// One consumer alone takes every request, unfiltered: a filtered consumer
	// costs the server a match of each message's subject on every
	// acknowledgement, measured at a third of its CPU.
	alone := len(routes) == 1 && len(priorities) == 1
	var out []RouteConsumer
	for _, p := range priorities {
		for _, rt := range routes {
			rc := RouteConsumer{Durable: c.Requests.ConsumerName(p, rt), Priority: p, Route: rt, Filters: c.Requests.Filters(p, rt)}
			switch {
			case alone:
				rc.Filters = nil
			case len(priorities) == 1:
				// Without priorities, urgent requests are batch ones.
				rc.Filters = append(rc.Filters, c.Requests.Filters(wire.Urgent, rt)...)
			}
			out = append(out, rc)
		}
	}
	return out
}
