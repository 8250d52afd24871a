// Command monitor shows the fleet: throughput, failures, latency, queue, retry and
// graveyard sizes, and who holds which key. It may start before or after the
// workers.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/monitor"
	"github.com/ratefleet/ratefleet/internal/natsconn"
)

func main() {
	cli.Main("monitor", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdout, os.Stderr) })
}

const usage = "Prints the fleet's throughput, latency, queues and keys every --interval, and a last block on exit."

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("monitor", usage, stdout, stderr)
	fs := cmd.Flags
	var nopts cli.NATS
	nopts.Register(fs)
	var (
		streamsFile = fs.String("streams", "", "streams.yaml to check the server against (default: the built-in one)")
		interval    = fs.Duration("interval", 5*time.Second, "how often to print")
		once        = fs.Bool("once", false, "print one block (after a second of collecting) and exit")
		asJSON      = fs.Bool("json", false, "print each snapshot as one JSON line instead of the text block")
		httpAddr    = fs.String("http", "", "serve the live web page (/) and Prometheus /metrics on this address, such as 127.0.0.1:9090 (default: off); it has no authentication: keep it on loopback, or put it behind an authenticating proxy (see README)")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	if *interval <= 0 {
		return cli.Usage(fmt.Errorf("--interval %s must be positive", *interval))
	}
	nc, err := nopts.Resolve(os.Getenv, cmd.Logger())
	if err != nil {
		return err
	}
	log := cmd.Logger()
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-monitor", StreamsFile: *streamsFile, CheckOnly: true, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	c := monitor.New(conn.JS, conn.Streams, log, nil)
	collectCtx, stopCollect := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCollect()
	collected := make(chan error, 1)
	go func() { collected <- c.Run(collectCtx) }()

	metrics := monitor.NewMetrics()
	sampler := monitor.NewSampler(c, monitor.DefaultSampleEvery)
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("--http %s: %w", *httpAddr, err)
		}
		if !loopback(ln.Addr()) {
			log.Warn("the live page and /metrics are served beyond loopback without authentication: anyone who reaches this address sees the fleet; put an authenticating proxy in front (see README)", "addr", ln.Addr().String())
		}
		srv := &http.Server{Handler: metrics.WebHandler(sampler.History), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		log.Info("serving the live page and Prometheus metrics", "page", "http://"+ln.Addr().String()+"/", "metrics", "http://"+ln.Addr().String()+"/metrics")
	}
	// The sampler owns the tick; the text, the page and /metrics present its
	// samples.
	samples := make(chan monitor.Snapshot, 1)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go sampler.Run(sampleCtx, func(s monitor.Snapshot) {
		metrics.Set(s)
		select {
		case samples <- s:
		default: // the printer is behind: it takes the next one
		}
	})
	print := func(s monitor.Snapshot) error {
		if *asJSON {
			return json.NewEncoder(stdout).Encode(s)
		}
		return monitor.WriteText(stdout, s)
	}
	next := time.Now().Add(*interval)
	if *once {
		next = time.Now().Add(time.Second)
	}
	for {
		select {
		case err := <-collected:
			return err
		case <-ctx.Done():
			stopSampling()
			fmt.Fprintln(stdout, "final:")
			s := sampler.Sample(context.WithoutCancel(ctx))
			metrics.Set(s)
			return print(s)
		case s := <-samples:
			if s.At.Before(next) {
				continue
			}
			next = next.Add(*interval)
			if err := print(s); err != nil {
				return err
			}
			if *once {
				return nil
			}
		}
	}
}

// loopback reports whether a listener's address is on loopback only.
func loopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
