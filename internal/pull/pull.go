// Package pull asks JetStream pull consumers for messages, one pull at a time
// (for one message, or a batch), over one subscription that lives as long as
// its Puller.
//
// jetstream.Consumer.Fetch subscribes to a fresh inbox for every call and drops
// it after: two more protocol messages, a change to the server's subject index
// and a goroutine, per fetch. A worker that pulls one request each time one of
// its keys can send fetches once per request, so that is most of what a pull
// costs. A Puller subscribes once and sends each pull request
// ($JS.API.CONSUMER.MSG.NEXT, the same request Fetch sends) with a reply
// subject under its own inbox: the request's number, so an answer to an earlier
// request (its 408 at expiry, say) is told from the current one's. A message
// delivered after its caller stopped waiting is not lost: it is kept, and the
// next call returns it.
package pull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrPull is the error of a pull the server refused or did not answer: the
// consumer is gone, the server has no JetStream to answer, or too many pulls
// wait on the consumer. Waiting a little and pulling again is the way out.
var ErrPull = errors.New("pull refused")

// answerGrace is how long past a pull's own expiry its caller waits for the
// server's answer before giving up on it (a message still delivered is kept).
const answerGrace = 2 * time.Second

// kept bounds the messages delivered after their callers stopped waiting,
// which wait in the subscription's channel for the next call: each caller
// leaves at most one pull outstanding, for one message or one batch.
const kept = 16 + MaxBatch

// Puller pulls messages from the pull consumers of one JetStream account over
// one subscription. One goroutine at a time may call Next; Close may be called
// from any.
type Puller struct {
	// Set once.
	nc     *nats.Conn
	api    string // the JetStream API prefix, ending in "."
	inbox  string // the subscription's subject, without its last token
	sub    *nats.Subscription
	ch     chan *nats.Msg
	closed sync.Once

	// Only Next's goroutine uses it.
	n uint64 // pull requests sent
}

// New subscribes a Puller to an inbox of its own on js's connection.
func New(js jetstream.JetStream) (*Puller, error) {
	nc := js.Conn()
	api := js.Options().APIPrefix
	if api == "" {
		api = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(api, ".") {
		api += "."
	}
	p := &Puller{nc: nc, api: api, inbox: nc.NewInbox(), ch: make(chan *nats.Msg, kept)}
	sub, err := nc.ChanSubscribe(p.inbox+".*", p.ch)
	if err != nil {
		return nil, fmt.Errorf("subscribe to the pull inbox: %w", err)
	}
	p.sub = sub
	return p, nil
}

// request is the body of a pull request, as the JetStream API reads it.
type request struct {
	Batch   int   `json:"batch"`
	Expires int64 `json:"expires,omitempty"` // nanoseconds
	NoWait  bool  `json:"no_wait,omitempty"`
}

// Next asks the consumer durable of stream for one message, letting the server
// wait up to wait for one to arrive (not at all when 0), and returns it, or nil
// and no error when there was none. A message delivered earlier to a call that
// had stopped waiting is returned first, without asking. It returns ctx's error
// when ctx ends first (a message still delivered is kept for the next call), and
// ErrPull, wrapped, when the server refuses the pull.
func (p *Puller) Next(ctx context.Context, stream, durable string, wait time.Duration) (jetstream.Msg, error) {
	ms, err := p.fetch(ctx, stream, durable, 1, wait)
	if len(ms) == 0 {
		return nil, err
	}
	return ms[0], nil
}

// Batch asks the consumer durable of stream for up to n messages (at most
// MaxBatch) in one pull, without waiting for more to arrive, and returns those
// there were: none, and no error, when the queue is empty. Messages delivered
// earlier to a call that had stopped waiting come first. It returns ErrPull,
// wrapped, when the server refuses the pull or does not answer it, and what it
// has with ctx's error when ctx ends first. A message delivered after Batch
// returned is kept for the next call.
func (p *Puller) Batch(ctx context.Context, stream, durable string, n int) ([]jetstream.Msg, error) {
	return p.fetch(ctx, stream, durable, min(n, MaxBatch), 0)
}

// MaxBatch bounds the messages one Batch asks for.
const MaxBatch = 64

// fetch returns up to n messages: those kept first, then what one pull
// brings, waiting up to wait for the first to arrive (not at all when 0). It
// returns what it has when the pull ends, or an error and none.
func (p *Puller) fetch(ctx context.Context, stream, durable string, n int, wait time.Duration) ([]jetstream.Msg, error) {
	var got []jetstream.Msg
	for len(got) < n {
		m := p.early()
		if m == nil {
			break
		}
		got = append(got, m)
	}
	if len(got) == n || len(got) > 0 && wait > 0 {
		return got, nil
	}
	if err := ctx.Err(); err != nil {
		return got, err
	}
	p.n++
	reply := p.inbox + "." + strconv.FormatUint(p.n, 10)
	req := request{Batch: n - len(got), NoWait: wait <= 0}
	if wait > 0 {
		req.Expires = wait.Nanoseconds()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return got, err
	}
	subject := p.api + "CONSUMER.MSG.NEXT." + stream + "." + durable
	if err := p.nc.PublishRequest(subject, reply, body); err != nil {
		return got, fmt.Errorf("%w: ask %s for a message: %w", ErrPull, durable, err)
	}
	timer := time.NewTimer(max(wait, 0) + answerGrace)
	defer timer.Stop()
	for len(got) < n {
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-timer.C:
			if len(got) > 0 {
				return got, nil
			}
			return nil, fmt.Errorf("%w: %s did not answer a pull within %s", ErrPull, durable, max(wait, 0)+answerGrace)
		case m := <-p.ch:
			if isMessage(m) {
				got = append(got, message{m})
				if wait > 0 {
					return got, nil // a waiting pull asks for one
				}
				continue
			}
			if m.Subject != reply {
				continue // the status of an earlier pull: it has ended
			}
			switch status := m.Header.Get("Status"); status {
			case "404", "408":
				return got, nil // none (more) now, or none within wait
			case "100":
				continue // a heartbeat
			case "503":
				if len(got) > 0 {
					return got, nil
				}
				return nil, fmt.Errorf("%w: %s: no JetStream server answered (503 no responders)", ErrPull, durable)
			default:
				if len(got) > 0 {
					return got, nil
				}
				return nil, fmt.Errorf("%w: %s answered %s %s", ErrPull, durable, status, m.Header.Get("Description"))
			}
		}
	}
	return got, nil
}

// early returns a message delivered to a call that had stopped waiting, if one
// is kept; statuses of earlier pulls kept with it are dropped.
func (p *Puller) early() jetstream.Msg {
	for {
		select {
		case m := <-p.ch:
			if isMessage(m) {
				return message{m}
			}
		default:
			return nil
		}
	}
}

// isMessage reports whether m is a stored message, as opposed to a status.
func isMessage(m *nats.Msg) bool {
	return strings.HasPrefix(m.Reply, "$JS.ACK.") && m.Header.Get("Status") == ""
}

// Close unsubscribes and gives back at once (NAK) every message delivered and
// not yet taken. A message the server delivers after Close goes back to the
// consumer once its ack wait ends.
func (p *Puller) Close() {
	p.closed.Do(func() {
		_ = p.sub.Unsubscribe()
		for {
			select {
			case m := <-p.ch:
				if isMessage(m) {
					_ = m.Nak()
				}
			default:
				return
			}
		}
	})
}

// message is a delivered message with JetStream's acknowledgements, as
// jetstream.Msg has them.
type message struct{ m *nats.Msg }

var _ jetstream.Msg = message{}

// Metadata returns what the server says of the delivery in its reply subject.
func (g message) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := g.m.Metadata()
	if err != nil {
		return nil, err
	}
	return &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Consumer: md.Sequence.Consumer, Stream: md.Sequence.Stream},
		NumDelivered: md.NumDelivered, NumPending: md.NumPending, Timestamp: md.Timestamp,
		Stream: md.Stream, Consumer: md.Consumer, Domain: md.Domain,
	}, nil
}

// Data returns the message's payload.
func (g message) Data() []byte { return g.m.Data }

// Headers returns the message's headers.
func (g message) Headers() nats.Header { return g.m.Header }

// Subject returns the subject the message was stored under.
func (g message) Subject() string { return g.m.Subject }

// Reply returns the subject its acknowledgements go to.
func (g message) Reply() string { return g.m.Reply }

// Ack acknowledges the message, without waiting for the server.
func (g message) Ack() error { return g.m.Ack() }

// DoubleAck acknowledges the message and waits for the server to confirm it.
func (g message) DoubleAck(ctx context.Context) error { return g.m.AckSync(nats.Context(ctx)) }

// Nak gives the message back for redelivery at once.
func (g message) Nak() error { return g.m.Nak() }

// NakWithDelay gives the message back for redelivery after delay.
func (g message) NakWithDelay(delay time.Duration) error { return g.m.NakWithDelay(delay) }

// InProgress resets the message's ack wait.
func (g message) InProgress() error { return g.m.InProgress() }

// Term tells the server never to deliver the message again.
func (g message) Term() error { return g.m.Term() }

// TermWithReason is Term with a reason the server reports in its advisory.
func (g message) TermWithReason(reason string) error {
	return g.m.Respond([]byte("+TERM " + reason))
}
