package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/wire"
)

// withdraw is the last look at a request before it leaves, once the gate has
// granted it slot sl: a request the key may not serve goes back to the queue,
// and one its owner has cancelled (a mark in the cancels bucket, which only
// the owner may write) is buried as cancelled and never sent. Either way the
// slot is given back unsent. It reports whether the request was withdrawn;
// stop ends the request's in-progress marks.
func (s *session) withdraw(ctx context.Context, d settle.Delivery, sl slot, stop func()) bool {
	w := s.w
	serves := s.key.Serves(d.Req.Route())
	cancelled := serves && s.cancelled(ctx, d.Req)
	if serves && !cancelled {
		return false
	}
	stop()
	s.gate.done(sl, false, func(p Pacer) {
		p.Unsent(sl.ticket, w.cfg.Now()) // not a byte left: it cannot arrive
	})
	if !serves {
		// The consumers' filters keep this from happening; if they were
		// changed by hand, another key takes it.
		s.log.Error("pulled a request this key may not serve; giving it back", "request", d.Req.ID, "route", d.Req.Route().Token())
		w.settler.Back(d)
		return true
	}
	s.log.Info("request cancelled by its owner; not sending it", "request", d.Req.ID)
	w.settler.Bury(ctx, d, wire.ReasonCancelled, "cancelled by its owner before it was sent", nil)
	return true
}

// cancelled reports whether req's owner has marked it cancelled: from the
// worker's copy of the cancels bucket while its watch is live, else from the
// bucket. A mark that cannot be read counts as none (the request is sent, as
// asked before the mark), with a warning.
func (s *session) cancelled(ctx context.Context, req wire.Request) bool {
	key := wire.CancelKey(req.Owner, req.ID)
	if marked, known := s.w.marks.lookup(key); known {
		return marked
	}
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	_, err := s.w.cancels.Get(ctx, key)
	switch {
	case err == nil:
		return true
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false
	}
	s.log.Warn("could not read the request's cancel mark; sending it", "request", req.ID, "err", err)
	return false
}

// marks is the worker's copy of the cancels bucket's keys, kept by a watch, so
// that the check before each send costs no read of the bucket. Marks are rare
// and small; each is dropped once the bucket's max_age has removed it from the
// bucket too, so the copy holds no more than the bucket does.
//
// How far it can be trusted. Every marksProbe the watcher reads the bucket's
// last sequence; once the watch has delivered up to it, every mark written
// before that read is in the copy (fresh). A lookup answers from the copy only
// while it was fresh within marksLag; a watch that lags, stalls or stops (a
// lost connection, a cluster's leader moving) makes lookups say they do not
// know, and the caller reads the bucket, as before the watch.
//
// What it gives up: a mark written within marksLag of a check, and not yet
// delivered by the watch, is missed (on one machine the watch delivers in well
// under a millisecond); a read of the bucket sees a mark as soon as it is
// stored. As with a read, a cancel that comes after the check is too late
// anyway.
type marks struct {
	// Set once.
	kv     jetstream.KeyValue
	maxAge time.Duration // 0: marks never expire
	now    func() time.Time

	mu      sync.Mutex
	live    bool                 // the watch has delivered the bucket's content and runs
	set     map[string]time.Time // key → when its mark was written
	swept   time.Time
	seen    uint64    // the latest revision the watch delivered
	freshAt time.Time // every mark written before it is in the copy
	probe   struct {  // the latest read of the bucket's last sequence the watch has yet to reach
		at  time.Time
		seq uint64
	}
}

// How often the watcher reads the bucket's last sequence, and how long after
// the copy was last known fresh lookups still answer from it.
const (
	marksProbe = 500 * time.Millisecond
	marksLag   = 2 * time.Second
)

func newMarks(kv jetstream.KeyValue, maxAge time.Duration, now func() time.Time) *marks {
	return &marks{kv: kv, maxAge: maxAge, now: now, set: map[string]time.Time{}}
}

// lookup reports whether key is marked, and whether the copy knows.
func (m *marks) lookup(key string) (marked, known bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if !m.live || now.Sub(m.freshAt) > marksLag {
		return false, false
	}
	at, ok := m.set[key]
	return ok && (m.maxAge <= 0 || now.Sub(at) < m.maxAge), true
}

// run keeps the copy until ctx ends or the watch fails; the copy is not live
// once it returns.
func (m *marks) run(ctx context.Context) error {
	defer func() {
		m.mu.Lock()
		m.live = false
		m.mu.Unlock()
	}()
	started := m.now()
	w, err := m.kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("watch cancel marks: %w", err)
	}
	defer func() { _ = w.Stop() }()
	tick := time.NewTicker(marksProbe)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			m.check(ctx)
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("watch cancel marks: the watch ended")
			}
			m.apply(e, started)
		}
	}
}

// check reads the bucket's last sequence: the copy is fresh as of now once the
// watch has delivered up to it. A read that fails leaves the copy as fresh as
// it was.
func (m *marks) check(ctx context.Context) {
	at := m.now()
	ctx, cancel := context.WithTimeout(ctx, marksProbe)
	defer cancel()
	st, err := m.kv.Status(ctx)
	if err != nil {
		return
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return
	}
	m.reached(at, bs.StreamInfo().State.LastSeq)
}

// reached records that the bucket's last sequence was seq at instant at.
func (m *marks) reached(at time.Time, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen >= seq {
		m.freshAt = at
		m.probe.seq = 0
		return
	}
	m.probe.at, m.probe.seq = at, seq
}

// apply takes one update of the watch: nil once the bucket's content as of
// the watch's start is in.
func (m *marks) apply(e jetstream.KeyValueEntry, started time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e == nil {
		m.live = true
		m.freshAt = started
		return
	}
	m.seen = max(m.seen, e.Revision())
	if m.probe.seq != 0 && m.seen >= m.probe.seq {
		m.freshAt = m.probe.at
		m.probe.seq = 0
	}
	if e.Operation() == jetstream.KeyValuePut {
		m.set[e.Key()] = e.Created()
	} else {
		delete(m.set, e.Key())
	}
	if now := m.now(); m.maxAge > 0 && now.Sub(m.swept) >= m.maxAge/24 {
		m.swept = now
		for k, at := range m.set {
			if now.Sub(at) >= m.maxAge {
				delete(m.set, k)
			}
		}
	}
}

// marksWatcher is the duty that keeps the worker's copy of the cancel marks.
type marksWatcher struct {
	marks *marks
	log   *slog.Logger
	loop  loop
}

func (m *marksWatcher) start(wg *sync.WaitGroup) {
	m.loop.run(wg, func(ctx context.Context) {
		for ctx.Err() == nil {
			if err := m.marks.run(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("cancel mark watch ended; reading marks from the bucket until it runs again", "err", err)
				_ = sleep(ctx, time.Second, nil)
			}
		}
	})
}

func (m *marksWatcher) shutdown() { m.loop.stop() }
