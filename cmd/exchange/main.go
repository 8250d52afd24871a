// Command exchange serves the simulated rate-limited upstream API: the reference
// exchange's rules by default, every number a flag, faults changeable at run time.
// Run it with --help; the rules and endpoints are documented in internal/exchange.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// run serves until ctx is done, printing the API's base URL on stdout once it listens.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
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

// exitCode is 0 for success and --help, 2 for a usage error (already explained), and
// 1 for any other error, which it prints.
func exitCode(err error, stderr io.Writer) int {
	var usage usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		return 2
	}
	fmt.Fprintln(stderr, "exchange:", err)
	return 1
}
