package producer_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/producer"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

// startNATS starts an embedded NATS server with streams.yaml applied, changed by
// change when not nil, and returns the connection. Both are closed at cleanup.
func startNATS(t *testing.T, change func(*streams.Config)) *natsconn.Conn {
	t.Helper()
	ns, err := embedded.Start(embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := natsconn.Open(ctx, natsconn.Options{URL: ns.ClientURL(), Name: "producer-test", Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(c.NC.Close)
	if change != nil {
		change(c.Streams)
		require.NoError(t, c.Streams.Validate())
		_, err := c.Streams.Apply(ctx, c.JS)
		require.NoError(t, err)
	}
	return c
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testConfig is the default configuration with short pauses and no progress logs.
func testConfig() producer.Config {
	cfg := producer.DefaultConfig()
	cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 40*time.Millisecond
	cfg.Progress = 0
	return cfg
}

func newProducer(t *testing.T, c *natsconn.Conn, cfg producer.Config) *producer.Producer {
	t.Helper()
	p, err := producer.New(c.NC, c.Streams.Requests.Stream.Subjects[0], cfg, quiet())
	require.NoError(t, err)
	return p
}

func burst(t *testing.T, n int) producer.Source {
	t.Helper()
	b, err := producer.NewBurst(n, 0)
	require.NoError(t, err)
	g, err := producer.NewGenerator(b, time.Second, []byte(`{"k":1}`))
	require.NoError(t, err)
	return g
}

// requestsSource yields the given requests, all due at once.
type requestsSource []wire.Request

func (s *requestsSource) Next(now time.Time) (producer.Item, error) {
	if len(*s) == 0 {
		return producer.Item{}, io.EOF
	}
	r := (*s)[0]
	*s = (*s)[1:]
	return producer.Item{Due: now, Request: r}, nil
}

// storedIDs reads every message of the requests stream, checks each is a valid
// request whose Nats-Msg-Id is its id, and returns the ids in stream order.
func storedIDs(t *testing.T, c *natsconn.Conn) []string {
	t.Helper()
	ctx := context.Background()
	st, err := c.JS.Stream(ctx, c.Streams.Requests.Stream.Name)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		r, err := wire.Decode(m.Data)
		require.NoError(t, err)
		require.Equal(t, r.ID, m.Header.Get(jetstream.MsgIDHeader))
		ids = append(ids, r.ID)
	}
	require.Len(t, ids, int(info.State.Msgs))
	return ids
}

func lines(s string) []string { return strings.Fields(s) }

func TestRun_PublishesEveryRequestOnceWithItsID(t *testing.T) {
	c := startNATS(t, nil)
	var ids bytes.Buffer
	cfg := testConfig()
	cfg.IDs = &ids
	cfg.MaxPending = 16
	p := newProducer(t, c, cfg)

	sum, err := p.Run(context.Background(), burst(t, 200))
	require.NoError(t, err)
	require.Equal(t, int64(200), sum.Requests)
	require.Equal(t, int64(200), sum.Published)
	require.Zero(t, sum.Duplicates+sum.Failed+sum.Unconfirmed+sum.Retries)
	require.Zero(t, sum.InFlight())
	require.Equal(t, sum, p.Snapshot())

	acked := lines(ids.String())
	require.Len(t, acked, 200)
	require.ElementsMatch(t, acked, storedIDs(t, c))
}

func TestRun_SameRequestTwiceIsStoredOnceAndCountedAsDuplicate(t *testing.T) {
	c := startNATS(t, nil)
	var ids bytes.Buffer
	cfg := testConfig()
	cfg.IDs = &ids
	p := newProducer(t, c, cfg)

	r := wire.New(time.Now(), time.Second, nil)
	other := wire.New(time.Now(), time.Second, nil)
	src := requestsSource{r, other, r}
	sum, err := p.Run(context.Background(), &src)
	require.NoError(t, err)
	require.Equal(t, int64(3), sum.Requests)
	require.Equal(t, int64(2), sum.Published)
	require.Equal(t, int64(1), sum.Duplicates)
	require.ElementsMatch(t, []string{r.ID, other.ID}, storedIDs(t, c))
	require.ElementsMatch(t, []string{r.ID, other.ID, r.ID}, lines(ids.String()), "every acknowledged request is listed")
}

func TestRun_FullStreamBacksOffRetriesAndLosesNothing(t *testing.T) {
	const capacity, total = 5, 40
	c := startNATS(t, func(sc *streams.Config) { sc.Requests.Stream.MaxMsgs = capacity })
	var ids bytes.Buffer
	cfg := testConfig()
	cfg.IDs = &ids
	cfg.MaxPending = 12
	p := newProducer(t, c, cfg)

	type result struct {
		sum producer.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := p.Run(context.Background(), burst(t, total))
		done <- result{sum, err}
	}()

	// The stream fills and refuses the rest: the producer retries, nothing fails.
	require.Eventually(t, func() bool { return p.Snapshot().Retries >= int64(2*(cfg.MaxPending-capacity)) },
		10*time.Second, 5*time.Millisecond, "the producer retries while the stream is full")
	s := p.Snapshot()
	require.Equal(t, int64(capacity), s.Published)
	require.Zero(t, s.Failed)
	require.Equal(t, int64(capacity+cfg.MaxPending), s.Requests, "no request is made while MaxPending are out")

	// A consumer drains the stream; every request ends stored exactly once.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.Consumer.Durable)
	require.NoError(t, err)
	var consumed []string
	for len(consumed) < total && ctx.Err() == nil {
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(200*time.Millisecond))
		require.NoError(t, err)
		for m := range batch.Messages() {
			r, err := wire.Decode(m.Data())
			require.NoError(t, err)
			consumed = append(consumed, r.ID)
			require.NoError(t, m.DoubleAck(ctx))
		}
	}
	res := <-done
	require.NoError(t, res.err)
	require.Equal(t, int64(total), res.sum.Requests)
	require.Equal(t, int64(total), res.sum.Published)
	require.Zero(t, res.sum.Failed+res.sum.Unconfirmed+res.sum.Duplicates)
	require.Positive(t, res.sum.Retries)

	require.Len(t, consumed, total)
	acked := lines(ids.String())
	require.ElementsMatch(t, acked, consumed, "each acknowledged request was delivered once")
	require.Empty(t, storedIDs(t, c))
}

func TestRun_JSONLines(t *testing.T) {
	input := `{"id":"l1"}
{"id":"l2","ttl_ms":5000,"payload":{"n":2}}
{"id":"l3",
{"id":"l4"}
{"id":"l5","created":"2026-01-02T03:04:05Z"}
`
	tests := []struct {
		name    string
		skip    bool
		wantIDs []string
		skipped int64
	}{
		{"stop at a bad line", false, []string{"l1", "l2"}, 0},
		{"skip a bad line", true, []string{"l1", "l2", "l4", "l5"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startNATS(t, nil)
			cfg := testConfig()
			cfg.SkipBadLines = tt.skip
			p := newProducer(t, c, cfg)

			sum, err := p.Run(context.Background(), producer.NewLines(strings.NewReader(input), "requests.jsonl", time.Second))
			if tt.skip {
				require.NoError(t, err)
			} else {
				var bad *producer.BadLineError
				require.ErrorAs(t, err, &bad)
				require.Equal(t, 3, bad.Line)
				require.ErrorContains(t, err, "requests.jsonl line 3")
			}
			require.Equal(t, tt.skipped, sum.Skipped)
			require.Equal(t, int64(len(tt.wantIDs)), sum.Published)
			require.ElementsMatch(t, tt.wantIDs, storedIDs(t, c))
		})
	}
}

// tickingSource makes a request due at once on every call, and moves the clock on
// by step after each, as if making one took that long.
type tickingSource struct {
	clock *testenv.Clock
	step  time.Duration
}

func (s tickingSource) Next(now time.Time) (producer.Item, error) {
	defer s.clock.Add(s.step)
	return producer.Item{Due: now, Request: wire.New(now, time.Second, nil)}, nil
}

func TestRun_StopsAtItsBounds(t *testing.T) {
	tests := []struct {
		name     string
		count    int64
		duration time.Duration
		want     int64
	}{
		{"count", 7, 0, 7},
		{"duration", 0, 50 * time.Millisecond, 5}, // due at 0, 10, 20, 30 and 40 ms
		{"count first", 3, 50 * time.Millisecond, 3},
		{"duration first", 100, 25 * time.Millisecond, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startNATS(t, nil)
			clock := testenv.NewClock(t0)
			cfg := testConfig()
			cfg.Count, cfg.Duration, cfg.Now = tt.count, tt.duration, clock.Now
			p := newProducer(t, c, cfg)
			sum, err := p.Run(context.Background(), tickingSource{clock, 10 * time.Millisecond})
			require.NoError(t, err)
			require.Equal(t, tt.want, sum.Requests)
			require.Equal(t, tt.want, sum.Published)
			require.Len(t, storedIDs(t, c), int(tt.want))
		})
	}
}

func TestRun_InterruptedSeedRunSettlesWhatItSent(t *testing.T) {
	c := startNATS(t, nil)
	var ids bytes.Buffer
	cfg := testConfig()
	cfg.IDs = &ids
	p := newProducer(t, c, cfg)
	gen, err := producer.NewGenerator(producer.NewSeed(rand.New(rand.NewPCG(1, 1))), time.Second, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		sum producer.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := p.Run(ctx, gen)
		done <- result{sum, err}
	}()
	require.Eventually(t, func() bool { return p.Snapshot().Published >= 10 }, 10*time.Second, time.Millisecond)
	cancel()
	res := <-done
	require.NoError(t, res.err, "an interrupt is the seed shape's normal end")
	require.GreaterOrEqual(t, res.sum.Published, int64(10))
	require.Equal(t, res.sum.Requests, res.sum.Published, "what was sent got its ack within the grace")
	require.ElementsMatch(t, lines(ids.String()), storedIDs(t, c))
}

func TestRun_StoppedConnectionFailsLoudly(t *testing.T) {
	c := startNATS(t, nil)
	cfg := testConfig()
	p := newProducer(t, c, cfg)
	c.NC.Close()
	sum, err := p.Run(context.Background(), burst(t, 3))
	require.ErrorIs(t, err, producer.ErrNotStored)
	require.Positive(t, sum.Failed)
	require.Equal(t, sum.Requests, sum.Failed)
	require.ErrorContains(t, err, "connection closed")
}

func TestSummary_String(t *testing.T) {
	s := producer.Summary{Requests: 10, Published: 9, Duplicates: 1, Retries: 3, Skipped: 2, Elapsed: 2 * time.Second}
	require.Equal(t, `requests     10
published    9
duplicates   1
retried      3 attempts
failed       0
unconfirmed  0
skipped      2 bad lines
elapsed      2s
rate         4.5 req/s
`, s.String())
}

func TestRun_RequestsNotStoredAreCountedAndNamed(t *testing.T) {
	const capacity, total = 3, 8
	tests := []struct {
		name       string
		maxRetries int
		interrupt  bool
		wantReason string
	}{
		{"retries exhausted", 2, false, "gave up after 2 retries"},
		{"interrupted while waiting to retry", -1, true, "interrupted while it waited to retry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startNATS(t, func(sc *streams.Config) { sc.Requests.Stream.MaxMsgs = capacity })
			var logs syncBuffer
			cfg := testConfig()
			cfg.MaxRetries = tt.maxRetries
			p, err := producer.New(c.NC, c.Streams.Requests.Stream.Subjects[0], cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			require.NoError(t, err)

			src := requestsSource{}
			for i := range total {
				src = append(src, wire.New(time.Now(), time.Second, nil))
				src[i].ID = fmt.Sprintf("req-%d", i)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			var sum producer.Summary
			go func() {
				defer close(done)
				sum, err = p.Run(ctx, &src)
			}()
			if tt.interrupt {
				require.Eventually(t, func() bool { return p.Snapshot().Retries >= 3*(total-capacity) },
					10*time.Second, time.Millisecond)
				cancel()
			}
			<-done
			require.ErrorIs(t, err, producer.ErrNotStored)
			require.Equal(t, int64(total), sum.Requests)
			require.Equal(t, int64(capacity), sum.Published)
			require.Equal(t, int64(total-capacity), sum.Failed)
			require.Zero(t, sum.Unconfirmed)

			stored := storedIDs(t, c)
			for i := range total {
				id := fmt.Sprintf("req-%d", i)
				if slices.Contains(stored, id) {
					continue
				}
				require.Regexp(t, `level=ERROR msg="request not stored" id=`+id+` attempts=\d+ err=".*`+tt.wantReason, logs.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRun_UnansweredRequestsAreUnconfirmed(t *testing.T) {
	const total = 4
	tests := []struct {
		name        string
		ackTimeout  time.Duration
		maxRetries  int
		interrupt   bool
		wantRetries int64
		wantReason  string
	}{
		{"ack timeout with no retry left", 20 * time.Millisecond, 1, false, total, "gave up after 1 retries"},
		{"shutdown grace ended", time.Minute, 0, true, 0, "no ack before the shutdown grace ended"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startNATS(t, nil)
			// Something listens on the subject but never answers, as a stream
			// that stored a request and whose ack was lost.
			sub, err := c.NC.SubscribeSync("blackhole")
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			var logs syncBuffer
			cfg := testConfig()
			cfg.AckTimeout, cfg.MaxRetries, cfg.Grace = tt.ackTimeout, tt.maxRetries, 30*time.Millisecond
			p, err := producer.New(c.NC, "blackhole", cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			require.NoError(t, err)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			var sum producer.Summary
			go func() {
				defer close(done)
				sum, err = p.Run(ctx, burst(t, total))
			}()
			if tt.interrupt {
				require.Eventually(t, func() bool {
					n, _, err := sub.Pending()
					return err == nil && n == total
				}, 10*time.Second, time.Millisecond, "every request was sent")
				cancel()
			}
			<-done
			require.ErrorIs(t, err, producer.ErrNotStored)
			require.Equal(t, int64(total), sum.Unconfirmed)
			require.Zero(t, sum.Failed+sum.Published)
			require.Equal(t, tt.wantRetries, sum.Retries)
			require.Equal(t, total, strings.Count(logs.String(), `msg="request unconfirmed: it may or may not be in the stream"`))
			require.Contains(t, logs.String(), tt.wantReason)
		})
	}
}

// writeCounter dials NATS and counts the writes on the connections it made.
type writeCounter struct{ writes atomic.Int64 }

func (d *writeCounter) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return countedConn{Conn: c, writes: &d.writes}, nil
}

type countedConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countedConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestRun_ABurstLeavesInAFewWrites: requests due together are published by
// the generator one after the other, their answers awaited apart, so the
// connection writes them together: 500 requests due at once left in 4 to 8
// writes in six runs. Publishing each from its own goroutine let the
// connection's flusher, on another processor, write them a few at a time (75
// to 465 writes in six runs). Under the race detector the goroutines are slow
// enough that either way may come out in a few writes, so there only the
// requests are checked.
func TestRun_ABurstLeavesInAFewWrites(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	c := startNATS(t, nil)
	var d writeCounter
	nc, err := nats.Connect(c.NC.ConnectedUrl(), nats.SetCustomDialer(&d))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	cfg := testConfig()
	cfg.MaxPending = 512
	p, err := producer.New(nc, c.Streams.Requests.Stream.Subjects[0], cfg, quiet())
	require.NoError(t, err)

	before := d.writes.Load()
	sum, err := p.Run(context.Background(), burst(t, 500))
	require.NoError(t, err)
	require.Equal(t, int64(500), sum.Published)
	writes := d.writes.Load() - before
	t.Logf("500 requests in %d writes", writes)
	if !raceEnabled {
		require.Less(t, writes, int64(50))
	}
	require.Len(t, storedIDs(t, c), 500)
}
