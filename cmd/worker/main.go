// Command worker claims an upstream API key through a NATS KV lease and sends that
// key's requests from the shared queue through its own rate limiter. Run as many as
// you like: each holds up to --keys keys, and the rest stand by to take over.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(cli.ExitCode("worker", err, os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var nopts cli.NATS
	nopts.Register(fs)
	var (
		streamsFile = fs.String("streams", "", "streams.yaml to check the server against (default: the built-in one)")
		keysFile    = fs.String("keys-file", "", "file of API keys, one `name=secret` or secret a line (default: $"+keys.EnvVar+")")
		maxKeys     = fs.Int("keys", 1, "how many keys this process holds at once, each with its own limiter")
		upstreamURL = fs.String("upstream", "http://127.0.0.1:8080", "base URL of the upstream API; the API keys go to it, so plain http:// is refused for a host that is not loopback")
		insecureUp  = fs.Bool("allow-insecure-upstream", false, "allow a plain http:// --upstream on a host that is not loopback (the API keys then cross the network unencrypted)")
		id          = fs.String("id", "", "worker id in leases and stats (default: host-pid-random)")
		pacer       = fs.String("limiter", "adaptive", "limiter: adaptive, or a baseline for comparison: "+worker.PacerNames())
		maxDelay    = fs.Duration("max-delay", 50*time.Millisecond, "largest one-way delay to the upstream, including the time it takes to register a request, that the limiter assumes at start (the reference exchange: 50ms; raise it if the upstream can be slower, since a 429 means it was)")
		timeout     = fs.Duration("request-timeout", 2*time.Second, "how long one attempt may take before it counts as a timeout")
		inFlight    = fs.Int("max-in-flight", 16, "requests one key holds at once, waiting or sending")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		keeper      = fs.Bool("keeper", true, "also bury requests the server gave up on without a worker seeing it (advisories and reconciliation; safe in every worker)")
		gatewayHold = fs.Duration("gateway-hold", worker.DefaultGatewayHold, "how long after a gateway's answer (a proxy's 502/503/504, or an answer not in the upstream's format) the request may still reach the upstream; the key's next send waits for it")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: worker [flags]\n\nClaims an API key and sends its requests from the queue, without ever exceeding its rate limit.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cli.Usage(err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cli.Usage(fmt.Errorf("--log-level: %w", err))
	}
	if err := checkUpstream(*upstreamURL, *insecureUp); err != nil {
		return cli.Usage(err)
	}
	nc, err := nopts.Resolve(os.Getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	factory, err := worker.NewPacerFactory(*pacer, limiter.Config{MaxDelay: *maxDelay})
	if err != nil {
		return err
	}
	ks, err := keys.Load(*keysFile, os.Getenv)
	if err != nil {
		return err
	}
	if *id == "" {
		host, _ := os.Hostname()
		*id = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-worker " + *id, StreamsFile: *streamsFile, CheckOnly: true, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	up, err := upstream.New(*upstreamURL, *timeout, *inFlight**maxKeys, nil)
	if err != nil {
		return err
	}
	defer up.Close()
	w, err := worker.New(ctx, conn.JS, worker.Config{
		ID: *id, Keys: ks, MaxKeys: *maxKeys, Upstream: up, Streams: conn.Streams,
		NewPacer: factory, MaxInFlight: *inFlight, GatewayHold: *gatewayHold, Keeper: *keeper, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("worker started", "id", *id, "keys", len(ks), "max_keys", *maxKeys, "limiter", *pacer, "upstream", cli.RedactURL(*upstreamURL), "nats", nc.Redacted())
	return w.Run(ctx)
}
