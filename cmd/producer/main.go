// Command producer publishes requests to the ratefleet queue in a chosen load shape:
// the seed client's workload by default, or a fixed rate, a Poisson process,
// bursts, or JSON lines from a file. It stops at its bounds or on SIGINT/SIGTERM and
// prints what happened to every request. Run it with --help for the flags.
// `producer cancel ID...` cancels queued requests of the connection's user.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/producer"
	"github.com/ratefleet/ratefleet/wire"
)

func main() {
	cli.Main("producer", func(ctx context.Context) error {
		cli.TuneProcs(ctx, os.Getenv)
		return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	})
}

// run publishes until the bounds are reached or ctx ends, then prints the summary
// on stdout. stdin is read for --file -.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	if len(args) > 0 && args[0] == "cancel" {
		return runCancel(ctx, args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	log := o.log
	nc, err := o.nats.Resolve(os.Getenv, log)
	if err != nil {
		return err
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-producer", StreamsFile: o.streamsFile, CheckOnly: true, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	src, closeInput, err := o.source(ctx, stdin, log)
	if err != nil {
		return err
	}
	defer closeInput()
	closeIDs, err := o.openIDs()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeIDs()) }()
	o.cfg.DuplicateWindow = conn.Streams.Requests.Stream.DuplicateWindow
	// The requests are the connection's user's: only that user may read their
	// results (docs/security.md).
	if conn.User != "" {
		if o.cfg.Owner, err = wire.ParseOwner(conn.User); err != nil {
			return fmt.Errorf("the NATS user cannot own requests: %w", err)
		}
	}
	var ids *producer.IDSet
	var results *producer.Results
	if o.resultsOut != "" {
		ids = producer.NewIDSet()
		o.cfg.IDs = multi(o.cfg.IDs, ids)
		if results, err = producer.WatchResults(conn.NC, conn.Streams.Results, o.cfg.Owner); err != nil {
			return err
		}
		defer results.Close()
	}
	p, err := producer.New(conn.NC, conn.Streams.Requests.Subject(), o.cfg, log)
	if err != nil {
		return err
	}
	sum, err := p.Run(ctx, src)
	if ids != nil {
		err = errors.Join(err, o.collect(context.WithoutCancel(ctx), results, ids, stdout, log))
	}
	fmt.Fprint(stdout, sum)
	return err
}

// collect writes the results of the published requests to --results-out.
func (o options) collect(ctx context.Context, results *producer.Results, ids *producer.IDSet, stdout io.Writer, log *slog.Logger) error {
	w, closeOut := stdout, func() error { return nil }
	if o.resultsOut != "-" {
		f, err := os.Create(o.resultsOut)
		if err != nil {
			return fmt.Errorf("--results-out: %w", err)
		}
		w, closeOut = f, f.Close
	}
	ctx, cancel := context.WithTimeout(ctx, o.resultsWait)
	defer cancel()
	t, err := results.Collect(ctx, ids, w)
	err = errors.Join(err, closeOut())
	log.Info("results", "served", t.Served, "buried", t.Buried, "missing", t.Missing)
	if t.Missing > 0 {
		err = errors.Join(err, fmt.Errorf("%d requests have no result after --results-wait %s (still queued, or no worker running)", t.Missing, o.resultsWait))
	}
	return err
}

// multi writes to both writers, either of which may be nil.
func multi(a, b io.Writer) io.Writer {
	if a == nil {
		return b
	}
	return io.MultiWriter(a, b)
}
