package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/stats"
)

// fetchWait bounds one pull request: how long a fetch waits for messages that are
// not there yet. Short, so sessions that became ready meanwhile join the next one
// soon; one pull a quarter second per process when idle.
const fetchWait = 250 * time.Millisecond

// maxFetch bounds one pull request's batch.
const maxFetch = 256

// fetcher is the process's one pull loop: it asks the shared consumer for as many
// messages as there are sessions ready to send, and hands each to one of them. So
// the process has at most one pull request waiting on the server, whatever its
// number of keys, and a request waits in the shared queue, where any key may take
// it, until a key is about to be able to send it.
type fetcher struct {
	// Set once.
	cons  jetstream.Consumer
	log   *slog.Logger
	rec   *stats.Recorder
	wants chan *want
	loop
}

// want is one session's ask for one message. Exactly one of filled and dropped
// happens: the fetcher fills it, or its session gives up first.
type want struct {
	got   chan jetstream.Msg // holds the one message
	state atomic.Int32       // wantOpen, wantFilled or wantDropped
}

const (
	wantOpen int32 = iota
	wantFilled
	wantDropped
)

func newFetcher(cons jetstream.Consumer, rec *stats.Recorder, log *slog.Logger, sessions int) *fetcher {
	return &fetcher{cons: cons, rec: rec, log: log, wants: make(chan *want, sessions), loop: newLoop()}
}

func (f *fetcher) start(wg *sync.WaitGroup) {
	f.loop.run(wg, f.run)
}

func (f *fetcher) shutdown() {
	f.loop.stop()
}

// next waits for one message until ctx ends. A message it returns is the caller's
// to handle or give back.
func (f *fetcher) next(ctx context.Context) (jetstream.Msg, error) {
	w := &want{got: make(chan jetstream.Msg, 1)}
	select {
	case f.wants <- w:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
	select {
	case m := <-w.got:
		return m, nil
	case <-ctx.Done():
		if w.state.CompareAndSwap(wantOpen, wantDropped) {
			return nil, ctx.Err()
		}
		return <-w.got, nil // filled meanwhile: the caller gives it back
	}
}

func (f *fetcher) run(ctx context.Context) {
	var pending []*want
	for {
		if len(pending) == 0 {
			select {
			case w := <-f.wants:
				pending = append(pending, w)
			case <-ctx.Done():
				return
			}
		}
		pending = f.gather(pending)
		if len(pending) == 0 {
			continue
		}
		batch, err := f.cons.Fetch(len(pending), jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.rec.Count("", stats.ResultPullError)
			f.log.Warn("pull failed; retrying", "err", err)
			_ = sleep(ctx, 250*time.Millisecond, nil)
			continue
		}
		for msg := range batch.Messages() {
			pending = f.hand(f.gather(pending), msg)
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil &&
			!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			f.rec.Count("", stats.ResultPullError)
			f.log.Warn("pull ended with an error; retrying", "err", err)
			_ = sleep(ctx, 250*time.Millisecond, nil) // such as no responders, on a node cut off from the consumer's leader
		}
	}
}

// gather adds the wants that arrived meanwhile, up to maxFetch, and drops those
// whose session gave up.
func (f *fetcher) gather(pending []*want) []*want {
	for len(pending) < maxFetch {
		select {
		case w := <-f.wants:
			pending = append(pending, w)
			continue
		default:
		}
		break
	}
	open := pending[:0]
	for _, w := range pending {
		if w.state.Load() == wantOpen {
			open = append(open, w)
		}
	}
	return open
}

// hand gives msg to the first want still open, or back to the queue at once.
func (f *fetcher) hand(pending []*want, msg jetstream.Msg) []*want {
	for len(pending) > 0 {
		w := pending[0]
		pending = pending[1:]
		if w.state.CompareAndSwap(wantOpen, wantFilled) {
			w.got <- msg
			return pending
		}
	}
	if err := msg.Nak(); err != nil {
		f.log.Warn("could not give a fetched request back; it is redelivered after its ack wait", "err", err)
	}
	return pending
}
