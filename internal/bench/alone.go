package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/host"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/pull"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/wire"
)

// AloneRow is what NATS costs for the messages the fleet exchanges over each
// request, with nothing else in the way: the producer publishing as in a
// cell, and in place of the workers one client that pulls, stores each
// request's result, sends its reply and acknowledges it, at the rate the keys
// allow, with no upstream, no limiter and no control plane (leases, key state,
// stats). NATS's CPU a request here is the least the fleet's messages cost.
type AloneRow struct {
	Keys   int
	Window time.Duration
	// Served is the requests the client ended in the window.
	Served uint64
	// NATS, Producer and Client are each one's CPU over the window; Client is
	// the benchmark's own process, which runs the client.
	NATS, Producer, Client time.Duration
	BoxBusy                float64
}

// PerRequest returns d per request served, in milliseconds.
func (r AloneRow) PerRequest(d time.Duration) float64 {
	if r.Served == 0 {
		return 0
	}
	return float64(d) / float64(time.Millisecond) / float64(r.Served)
}

// aloneEvery is how often the client pulls what the keys would send since its
// last pull (the fleet's workers gather their keys' looks over up to 20 ms).
const aloneEvery = 10 * time.Millisecond

// natsAlone measures NATS alone for keys, over cfg's window after its warm-up.
func natsAlone(ctx context.Context, cfg CPUConfig, keys int) (AloneRow, error) {
	row := AloneRow{Keys: keys}
	rate := float64(keys) * 20 * overload
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Keys: manyKeys(keys),
		Duration:     cfg.Warmup + cfg.Duration + 10*time.Second,
		ProducerArgs: []string{"--shape", "rate", "--rate", fmt.Sprint(rate), "--ttl", "10m", "--progress", "0", "--results", string(results(cfg.Results))},
		NATSProcess:  true, Logs: cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return row, err
	}
	defer f.Down()
	// The client speaks as the workers do, with their permissions.
	who, err := f.Access.Connection(f.URL(), roles.Worker)
	if err != nil {
		return row, err
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: who.URL, Connect: who.Options, Auth: who.Auth, Name: "ratefleet-nats-alone",
		StreamsFile: f.StreamsFile, CheckOnly: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return row, err
	}
	defer conn.Close()
	if err := f.StartProducer(); err != nil {
		return row, err
	}
	serveCtx, stop := context.WithCancel(ctx)
	var (
		served  atomic.Uint64
		wg      sync.WaitGroup
		serveEr error
	)
	wg.Go(func() { serveEr = serveAlone(serveCtx, conn, float64(keys)*perKeyBound, &served) })
	stopServing := sync.OnceValue(func() error {
		stop()
		wg.Wait()
		if serveEr != nil && !errors.Is(serveEr, context.Canceled) {
			return fmt.Errorf("serve the requests alone: %w", serveEr)
		}
		return nil
	})
	defer stopServing()
	type sample struct {
		at                    time.Time
		nats, producer, self  time.Duration
		served, busy, cpuTime uint64
	}
	read := func() sample {
		s := sample{at: time.Now(), nats: f.NATSProc.CPU(), producer: f.Producer.CPU(), self: fleet.SelfCPU(), served: served.Load()}
		s.busy, s.cpuTime = host.CPU()
		return s
	}
	if err := fleet.Sleep(ctx, cfg.Warmup); err != nil {
		return row, err
	}
	s0 := read()
	if err := fleet.Sleep(ctx, cfg.Duration); err != nil {
		return row, err
	}
	s1 := read()
	if err := stopServing(); err != nil {
		return row, err
	}
	row.Window, row.Served = s1.at.Sub(s0.at), s1.served-s0.served
	row.NATS, row.Producer, row.Client = s1.nats-s0.nats, s1.producer-s0.producer, s1.self-s0.self
	if s1.cpuTime > s0.cpuTime {
		row.BoxBusy = float64(s1.busy-s0.busy) / float64(s1.cpuTime-s0.cpuTime)
	}
	return row, nil
}

// serveAlone ends requests at perSecond, as the workers would with answers
// that cost nothing: every aloneEvery it pulls what is due in one pull, then
// for each request publishes a served result to the results stream (with its
// message id) and its reply, awaits the stores' confirmations together, and
// acknowledges the requests. It returns when ctx ends, or on an error.
func serveAlone(ctx context.Context, conn *natsconn.Conn, perSecond float64, served *atomic.Uint64) error {
	sc := conn.Streams
	p, err := pull.New(conn.JS)
	if err != nil {
		return err
	}
	defer p.Close()
	ajs, err := jetstream.New(conn.NC, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return err
	}
	tick := time.NewTicker(aloneEvery)
	defer tick.Stop()
	owed := 0.0
	var futures []jetstream.PubAckFuture
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		owed = min(owed+perSecond*aloneEvery.Seconds(), float64(pull.MaxBatch))
		n := int(owed)
		if n == 0 {
			continue
		}
		msgs, err := p.Batch(ctx, sc.Requests.Stream.Name, sc.Requests.Consumer.Durable, n)
		if err != nil {
			return err
		}
		owed -= float64(len(msgs))
		futures = futures[:0]
		for _, m := range msgs {
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			req, err := wire.DecodeFrom(sc.Requests.Subject(), m.Subject(), m.Data())
			if err != nil {
				return fmt.Errorf("request %d: %w", meta.Sequence.Stream, err)
			}
			res := wire.Result{
				ID: req.ID, Seq: meta.Sequence.Stream, Outcome: wire.Served, Status: 200,
				Body: `{"status":"OK","req_id":"` + req.ID + `"}`, Key: "k0001", Worker: "nats-alone",
				Delivery: meta.NumDelivered, At: time.Now(),
			}
			data, err := res.Encode()
			if err != nil {
				return err
			}
			msg := nats.NewMsg(wire.ResultSubject(sc.Results.Prefix(), req.Owner, req.ID))
			msg.Data = data
			fut, err := ajs.PublishMsgAsync(msg, jetstream.WithMsgID(wire.ResultMsgID(req.Owner, req.ID, res.Seq, strconv.FormatUint(res.Delivery, 10))))
			if err != nil {
				return err
			}
			futures = append(futures, fut)
			if err := conn.NC.Publish(wire.ReplySubject(sc.Results.ReplyPrefix, req.Owner, req.ID), data); err != nil {
				return err
			}
		}
		for _, fut := range futures {
			select {
			case <-fut.Ok():
			case err := <-fut.Err():
				return fmt.Errorf("store a result: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				return err
			}
		}
		served.Add(uint64(len(msgs)))
	}
}

// formatAlone renders the rows of NATS alone as a Markdown table.
func formatAlone(rows []AloneRow) string {
	var b strings.Builder
	b.WriteString("\nNATS alone: the producer as above, and in place of the workers one client in the runner's process that pulls every 10 ms what the keys allow (keys × 20 / 1043.5 ms), stores each request's result (with its message id) and sends its reply, awaits the stores together, then acknowledges the requests: the fleet's messages over each request, without upstream, limiter, leases, key state or stats.\n\n")
	b.WriteString("| keys | req/s | CPU ms/req: NATS | producer | client | machine busy |\n|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %.1f | %.3f | %.3f | %.3f | %.0f%% |\n",
			r.Keys, float64(r.Served)/r.Window.Seconds(), r.PerRequest(r.NATS), r.PerRequest(r.Producer), r.PerRequest(r.Client), 100*r.BoxBusy)
	}
	return b.String()
}
