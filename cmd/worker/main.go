// Command worker claims an upstream API key through a NATS KV lease and sends that
// key's requests from the shared queue through its own rate limiter. Run as many as
// you like: each holds up to --keys keys, and the rest stand by to take over.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/host"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
)

// gcPercent is the worker's garbage collector target (GOGC) unless its
// environment sets GOGC: a collection once the heap has grown by four times what
// the last one left live, where Go's default is once it has doubled. A worker
// keeps little live and allocates for every request, so it collects many times
// a second. With the simulator's set likewise, 200 keys on one worker cost 4 to
// 9 % less CPU a request and came closer to their bound, for about twice the
// memory (docs/operating.md). NATS and the other commands keep Go's default:
// they did not gain.
const gcPercent = 400

func main() {
	cli.SetGCPercent(os.Getenv, gcPercent)
	cli.Main("worker", func(ctx context.Context) error {
		cli.TuneProcs(ctx, os.Getenv)
		return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	})
}

const usage = "Claims an API key and sends its requests from the queue, without ever exceeding its rate limit."

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("worker", usage, stdout, stderr)
	fs := cmd.Flags
	var nopts cli.NATS
	nopts.Register(fs)
	var (
		streamsFile = fs.String("streams", "", "streams.yaml to check the server against (default: the built-in one)")
		keysFile    = fs.String("keys-file", "", "`file` of API keys, one name=secret or secret a line (default: $"+keys.EnvVar+")")
		maxKeys     = fs.Int("keys", 1, "how many keys this process holds at once, each with its own limiter")
		upstreamURL = fs.String("upstream", "http://127.0.0.1:8080", "base URL of the upstream API; the API keys go to it, so plain http:// is refused for a host that is not loopback")
		insecureUp  = fs.Bool("allow-insecure-upstream", false, "allow a plain http:// --upstream on a host that is not loopback (the API keys then cross the network unencrypted)")
		id          = fs.String("id", "", "worker id in leases and stats (default: host-pid-random)")
		pacer       = fs.String("limiter", "adaptive", "limiter: adaptive, or a baseline for comparison: "+worker.PacerNames())
		maxDelay    = fs.Duration("max-delay", 50*time.Millisecond, "largest one-way delay to the upstream, including the time it takes to register a request, that the limiter assumes at start (the reference exchange: 50ms; raise it if the upstream can be slower, since a 429 means it was)")
		timeout     = fs.Duration("request-timeout", worker.DefaultRequestTimeout, "how long one attempt may take before it counts as a timeout; a request timed out keeps its place in the key's windows for --max-arrival after it left")
		maxArrival  = fs.Duration("max-arrival", limiter.DefaultMaxArrival, "the longest a request may take to reach the upstream: one with no answer (a timeout, a broken connection) keeps its place in the key's windows until it left plus this, or the longest round trip seen")
		inFlight    = fs.Int("max-in-flight", 16, "requests one key holds at once, waiting or sending")
		keeper      = fs.Bool("keeper", true, "also bury requests the server gave up on without a worker seeing it (advisories and reconciliation; safe in every worker); it needs the keeper role: under the worker role, pass --keeper=false")
		profileFile = fs.String("profile", "", "upstream profile: a YAML file (what to call, where the key and nonce go, how to sign, what answers mean, what the upstream counts), or a built-in one: "+strings.Join(profile.BuiltinNames(), ", ")+" (default: reference)")
		checkpoint  = fs.Duration("checkpoint", worker.DefaultCheckpoint, "how often a key's holder writes its limiter's state to key state, so that a holder that crashes is followed from it (a per-day limit resumes from the day's count) rather than after its longest window; it sends nothing more than twice this after its latest; negative for none")
		busyShare   = fs.Float64("busy-share", 0.5, "the share of the machine's cores busy (Linux /proc/stat, read every 250ms) from which the machine counts as busy for 2 s: every answer then bounds its own request in the key's windows, since what shares the machine (an upstream, a proxy) may register arrivals late while this process is on time; 0 turns the watch off (the process's own lateness still counts)")
		gatewayHold = fs.Duration("gateway-hold", worker.DefaultGatewayHold, "how long after a gateway's answer (a proxy's 502/503/504, or an answer not in the upstream's format) the request may still reach the upstream; the key's next send waits for it")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	if *id != "" {
		if err := cli.CheckID("--id", *id); err != nil {
			return cmd.Usage(err)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	prof := profile.Reference()
	if *profileFile != "" {
		var err error
		if prof, err = profile.Open(*profileFile); err != nil {
			return err
		}
	}
	if set["upstream"] || *profileFile == "" {
		prof.BaseURL = *upstreamURL
	}
	if err := checkUpstream(prof.BaseURL, *insecureUp); err != nil {
		return cmd.Usage(err)
	}
	nc, err := nopts.Resolve(os.Getenv, cmd.Logger())
	if err != nil {
		return err
	}
	log := cmd.Logger()
	lc := limiter.Config{}
	if set["max-delay"] || prof.Rate.MaxDelay == 0 {
		lc.MaxDelay = *maxDelay
	}
	lc.MaxArrival = *maxArrival
	lcfg := prof.LimiterConfig(lc)
	if !(*busyShare >= 0 && *busyShare <= 1) { // NaN too
		return cmd.Usage(fmt.Errorf("--busy-share %v: a share of the cores from 0 to 1 (0 turns the watch off)", *busyShare))
	}
	// One process's keys share how late it has been, and how busy its machine.
	lcfg.Lateness = new(limiter.Lateness)
	if err := worker.CheckTimeouts(*timeout, lcfg); err != nil {
		return cmd.Usage(err)
	}
	if *keysFile != "" {
		if err := nopts.Files.Check(log, "--keys-file", *keysFile); err != nil {
			return err
		}
	}
	ks, err := keys.Load(*keysFile, os.Getenv)
	if err != nil {
		return err
	}
	if err := prof.CheckKeys(ks); err != nil {
		return err
	}
	// Every key's share of a rule counted across keys is taken over the keys
	// loaded here: every worker of a fleet loads the same keys.
	for _, k := range ks {
		if _, err := prof.Limits(k, ks); err != nil {
			return err
		}
	}
	factory, err := worker.NewLimitsFactory(*pacer, lcfg, func(k keys.Key) ([]limiter.Dimension, error) {
		return prof.Limits(k, ks)
	})
	if err != nil {
		return err
	}
	if *id == "" {
		*id = defaultID()
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-worker " + *id, StreamsFile: *streamsFile, CheckOnly: true, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	up, err := upstream.NewProfile(prof, *timeout, *inFlight**maxKeys, nil)
	if err != nil {
		return err
	}
	defer up.Close()
	w, err := worker.New(ctx, conn.JS, worker.Config{
		ID: *id, Keys: ks, MaxKeys: *maxKeys, Upstream: up, Streams: conn.Streams,
		NewPacer: factory, MaxInFlight: *inFlight, GatewayHold: *gatewayHold, Checkpoint: *checkpoint, Keeper: *keeper, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("worker started", "id", *id, "keys", len(ks), "max_keys", *maxKeys, "limiter", *pacer, "profile", prof.Name,
		"upstream", upstream.Redact(prof.BaseURL), "nats", nc.Redacted())
	if *busyShare > 0 {
		go host.Watch{Share: *busyShare, Busy: lcfg.Lateness.Loaded}.Run(ctx)
	}
	return w.Run(ctx)
}

// defaultID returns host-pid-random, with any character a worker id may not
// have in the host name replaced by '-'.
func defaultID() string {
	host, _ := os.Hostname()
	host = strings.Trim(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host), "-")
	if host == "" {
		host = "worker"
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
}
