// Command service lets any NATS client submit requests to the fleet and await
// their results, without Go: it runs the NATS micro service "ratefleet"
// (internal/service) until SIGINT or SIGTERM. Run it with --help; the endpoints
// and their bodies are in docs/service.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/service"
)

func main() {
	cli.Main("service", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdout, os.Stderr) })
}

const usageText = `Serves the NATS micro service "ratefleet", so that any NATS client can submit requests
to the fleet and await their results with plain request/reply and JSON:

  ratefleet.api.submit  {"id"?, "ttl_ms"?, "call"?, "weight"?, "payload"?}  answers {"id"}
  ratefleet.api.await   {"id", "timeout_ms"?}                                answers the result
  ratefleet.api.do      a submit body and "timeout_ms"?                      answers the result

such as: nats req ratefleet.api.do '{"call":{"path":"/api/request"}}'. Errors come as
micro's Nats-Service-Error-Code and Nats-Service-Error headers: 400 bad body, 404 or
408 no result in time (await again), 503 NATS failed, busy or stopping. Run as the
producer role. It prints the endpoints on stdout once it serves; on SIGINT/SIGTERM it
stops taking requests, lets those waiting finish for --grace, then drains. Several
instances share the requests.`

// run serves until ctx ends, then stops the service and drains the connection.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("service", usageText, stdout, stderr)
	fs := cmd.Flags
	var natsFlags cli.NATS
	natsFlags.Register(fs)
	streamsFile := fs.String("streams", "", "streams.yaml to check the server against and take the subjects from (default: the built-in one)")
	maxWaiting := fs.Int("max-waiting", service.DefaultMaxWaiting, "requests handled at once, submitting or waiting; one more is answered 503 \"busy, retry\"")
	grace := fs.Duration("grace", 10*time.Second, "on SIGINT/SIGTERM, how long requests already waiting may still get their result")
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	if *maxWaiting < 1 {
		return cmd.Usage(fmt.Errorf("--max-waiting %d: must be at least 1", *maxWaiting))
	}
	log := cmd.Logger()
	nc, err := natsFlags.Resolve(os.Getenv, log)
	if err != nil {
		return err
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-service", StreamsFile: *streamsFile, CheckOnly: true, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	var opts []client.Option
	if *streamsFile != "" {
		yaml, err := os.ReadFile(*streamsFile)
		if err != nil {
			return fmt.Errorf("--streams: %w", err)
		}
		opts = append(opts, client.WithStreams(yaml))
	}
	fleet, err := client.New(conn.NC, opts...)
	if err != nil {
		return err
	}
	svc, err := service.Start(conn.NC, fleet, service.Config{MaxWaiting: *maxWaiting, Logger: log})
	if err != nil {
		return err
	}
	info := svc.Info()
	subjects := make([]string, len(info.Endpoints))
	for i, e := range info.Endpoints {
		subjects[i] = e.Subject
	}
	fmt.Fprintf(stdout, "serving %s\n", strings.Join(subjects, " "))
	log.Info("service started", "name", info.Name, "version", info.Version, "id", info.ID, "max_waiting", *maxWaiting, "nats", nc.Redacted())
	<-ctx.Done()
	log.Info("service stopping", "grace", *grace)
	stop, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := svc.Stop(stop); err != nil {
		return err
	}
	log.Info("service stopped")
	return nil
}
