// Command producer publishes requests to the ratefleet queue in a chosen load shape:
// the seed client's workload by default, or a fixed rate, a Poisson process,
// bursts, or JSON lines from a file. It stops at its bounds or on SIGINT/SIGTERM and
// prints what happened to every request. Run it with --help for the flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/producer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// run publishes until the bounds are reached or ctx ends, then prints the summary
// on stdout. stdin is read for --file -.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := o.logger(stderr)
	src, closeInput, err := o.source(ctx, stdin, log)
	if err != nil {
		return err
	}
	defer closeInput()
	nc, err := o.nats.Resolve(os.Getenv)
	if err != nil {
		return err
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-producer", StreamsFile: o.streamsFile, CheckOnly: true, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	closeIDs, err := o.openIDs()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeIDs()) }()
	o.cfg.DuplicateWindow = conn.Streams.Requests.Stream.DuplicateWindow
	p, err := producer.New(conn.NC, conn.Streams.Requests.Stream.Subjects[0], o.cfg, log)
	if err != nil {
		return err
	}
	sum, err := p.Run(ctx, src)
	fmt.Fprint(stdout, sum)
	return err
}
