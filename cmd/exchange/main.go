// Command exchange serves the simulated rate-limited upstream API: the reference
// exchange's rules by default, every number a flag, faults changeable at run time.
// Run it with --help; the rules and endpoints are documented in internal/exchange.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/exchange"
)

// gcPercent is the simulator's garbage collector target (GOGC) unless its
// environment sets GOGC, as the worker's and for the same reason: it keeps
// little live and allocates for every request. A collection's pauses delay its
// answers, which the workers' limiters see as a slower upstream.
const gcPercent = 400

func main() {
	cli.SetGCPercent(os.Getenv, gcPercent)
	// Every core, not as few as it needs (cli.TuneProcs): on one processor the
	// simulator registered a key's requests out of their order more often when
	// the machine was busy (docs/benchmarks.md).
	cli.Main("exchange", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdout, os.Stderr) })
}

// run serves until ctx is done, printing the API's base URL on stdout once it listens.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stdout, stderr)
	if err != nil {
		return err
	}
	logger := o.log
	srv, err := exchange.New(o.cfg, logger)
	if err != nil {
		return err
	}
	if err := srv.Open(o.listen); err != nil {
		return err
	}
	fmt.Fprintln(stdout, srv.URL())
	<-ctx.Done()
	logger.Info("exchange shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Close(shutdown)
}
