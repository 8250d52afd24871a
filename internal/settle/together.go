package settle

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/burst"
	"github.com/ratefleet/ratefleet/wire"
)

// serveWindow is how long a served result waits for those of the worker's other
// requests, so that they are stored, and their requests acknowledged, together.
// NATS takes a burst of one kind of message (results to store, then
// acknowledgements of one consumer) for less work a message than the same
// messages spread out, each waking its stream's or consumer's loop alone
// (docs/benchmarks.md). A result waits at most this long, and only where
// results come less than a quarter of it apart (burst.Pace).
const serveWindow = 20 * time.Millisecond

// together writes served results in bursts: the results that come within
// serveWindow of the first are published at once, their confirmations awaited
// together, then their requests acknowledged at once. A result is still stored
// before its request is acknowledged. Where results come more than a quarter
// of the window apart (a worker with few keys) there is little to gather, and
// each is written alone (hold). It runs a goroutine only while results wait.
type together struct {
	// Set once.
	s  *Settler
	js jetstream.JetStream // publishes with ackTimeout for confirmations

	mu      sync.Mutex
	pace    *burst.Pace
	waiting []*serving
	running bool

	bursts atomic.Int64 // bursts published
}

// serving is one served result on its way.
type serving struct {
	d     Delivery
	msg   *nats.Msg // the result, as stored
	msgID string
	reply string
	done  chan struct{} // closed once settled, or once ok says it was not
	ok    bool          // stored and acknowledged
}

// serve stores sv's result with the others waiting and acknowledges its
// request. It reports false when the result could not be stored (or confirmed)
// this way: the caller writes it alone.
func (t *together) serve(sv *serving) bool {
	sv.done = make(chan struct{})
	t.mu.Lock()
	t.waiting = append(t.waiting, sv)
	if !t.running {
		t.running = true
		go t.run()
	}
	t.mu.Unlock()
	<-sv.done
	return sv.ok
}

// hold notes a result served at now, and reports whether it goes with the
// others (serve): while results come less than the window apart on average, or
// a burst is already on its way. Otherwise it is written alone, as it would be
// without bursts: holding it would only add a timer and a wait.
func (t *together) hold(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pace.Hold(now, t.running)
}

// run settles what waits, a window's worth at a time, until nothing waits.
func (t *together) run() {
	for {
		time.Sleep(t.pace.Window())
		t.mu.Lock()
		batch := t.waiting
		t.waiting = nil
		t.mu.Unlock()
		t.settle(batch)
		t.mu.Lock()
		if len(t.waiting) == 0 {
			t.running = false
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
	}
}

// settle publishes batch's results, awaits their confirmations, then
// acknowledges the requests whose results are stored.
func (t *together) settle(batch []*serving) {
	s := t.s
	t.bursts.Add(1)
	futures := make([]jetstream.PubAckFuture, len(batch))
	for i, sv := range batch {
		f, err := t.js.PublishMsgAsync(sv.msg, jetstream.WithMsgID(sv.msgID))
		if err != nil {
			continue // written alone by its caller
		}
		futures[i] = f
	}
	timeout := time.NewTimer(ackTimeout)
	defer timeout.Stop()
confirm:
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			batch[i].ok = true
		case <-f.Err():
		case <-timeout.C:
			// Unconfirmed: this one and those after it are written again by
			// their callers, alone (stored once, by their message ids).
			break confirm
		}
	}
	ctx := context.Background()
	for _, sv := range batch {
		if sv.ok {
			s.results.reply(sv.reply, sv.msg.Data)
			s.Ack(ctx, sv.d)
		}
		close(sv.done)
	}
}

// newTogether returns the bursts of s, publishing on js's connection.
func newTogether(s *Settler, js jetstream.JetStream, window time.Duration) (*together, error) {
	o := js.Options()
	timeout := jetstream.WithPublishAsyncTimeout(ackTimeout)
	var (
		ajs jetstream.JetStream
		err error
	)
	switch {
	case o.Domain != "":
		ajs, err = jetstream.NewWithDomain(js.Conn(), o.Domain, timeout)
	case o.APIPrefix != "" && o.APIPrefix != jetstream.DefaultAPIPrefix:
		ajs, err = jetstream.NewWithAPIPrefix(js.Conn(), o.APIPrefix, timeout)
	default:
		ajs, err = jetstream.New(js.Conn(), timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open JetStream for results: %w", err)
	}
	return &together{s: s, js: ajs, pace: burst.New(window)}, nil
}

// servedTogether builds the stored form of res for together, or reports false
// when it does not go that way: a result not kept, or too large for one message.
func (r *Results) servedTogether(owner wire.Owner, reply string, mode wire.Results, res wire.Result) (*serving, bool) {
	if !mode.Kept() {
		return nil, false
	}
	data, err := res.Encode()
	if err != nil || len(data) > r.limit {
		return nil, false
	}
	msg := nats.NewMsg(wire.ResultSubject(r.cfg.Results.Prefix(), owner, res.ID))
	msg.Data = data
	return &serving{msg: msg, msgID: servedMsgID(owner, res), reply: reply}, true
}

// servedMsgID is the message id of a served result: a retried publish of one
// delivery's result is stored once.
func servedMsgID(owner wire.Owner, res wire.Result) string {
	return wire.ResultMsgID(owner, res.ID, res.Seq, strconv.FormatUint(res.Delivery, 10))
}
