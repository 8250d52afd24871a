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

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/producer"
)

func main() {
	cli.Main("producer", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr) })
}

// run publishes until the bounds are reached or ctx ends, then prints the summary
// on stdout. stdin is read for --file -.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	log := o.log
	nc, err := o.nats.Resolve(os.Getenv)
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
	p, err := producer.New(conn.NC, conn.Streams.Requests.Stream.Subjects[0], o.cfg, log)
	if err != nil {
		return err
	}
	sum, err := p.Run(ctx, src)
	fmt.Fprint(stdout, sum)
	return err
}
