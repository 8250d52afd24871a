package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/natsconn"
)

const cancelUsage = `Usage: producer cancel [connection flags] [--streams FILE] ID...

Cancels queued requests of the connection's NATS user by id. Each gets a cancel mark
that a worker reads just before sending it: a request still queued then ends buried
with reason cancelled, and is never sent. A request a worker was already sending ends
as that send does (its result says which). A request that already has a result is
not cancelled: it is reported as it ended, and the exit status is 1.`

// runCancel cancels the requests named in args.
func runCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("producer cancel", cancelUsage, stdout, stderr)
	cmd.Args, cmd.MinArgs, cmd.MaxArgs = "ID...", 1, -1
	var nopts cli.NATS
	nopts.Register(cmd.Flags)
	streamsFile := cmd.Flags.String("streams", "", "streams.yaml to check the server against (default: the built-in one)")
	ids, err := cmd.Parse(args, os.Getenv)
	if err != nil {
		return err
	}
	log := cmd.Logger()
	nc, err := nopts.Resolve(os.Getenv, log)
	if err != nil {
		return err
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-producer", StreamsFile: *streamsFile, CheckOnly: true, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	opts := []client.Option{client.WithOwner(conn.User)}
	if *streamsFile != "" {
		yaml, err := os.ReadFile(*streamsFile)
		if err != nil {
			return fmt.Errorf("--streams: %w", err)
		}
		opts = append(opts, client.WithStreams(yaml))
	}
	c, err := client.New(conn.NC, opts...)
	if err != nil {
		return err
	}
	var failed error
	for _, id := range ids {
		_, err := c.Cancel(ctx, id)
		switch {
		case err == nil:
			fmt.Fprintf(stdout, "%s: cancel mark written; its result says cancelled unless a worker was already sending it\n", id)
		case errors.Is(err, client.ErrEnded):
			fmt.Fprintf(stdout, "%s: not cancelled: %v\n", id, err)
			failed = errors.Join(failed, err)
		default:
			return err
		}
	}
	return failed
}
