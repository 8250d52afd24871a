package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
)

const usageText = `Serves the simulated rate-limited upstream API. With no flags it follows the reference
exchange exactly: its five keys, 20 accepted requests per key per more than 1000 ms,
0..50 ms delays each way, a key blocked after 10 rate-limit rejections.

Endpoints:
  GET  /api/request?api_key=K&nonce=N&req_id=R   the API (a form body on the GET works too)
  POST /api/private                               signed mode: API-Key (a key's id), form nonce and req_id,
                                                  API-Sign as Kraken signs (keys: name id=ID secret=BASE64)
  POST /v1/complete                               per-minute mode: Authorization: Bearer SECRET,
                                                  X-Request-Id, no nonce, 429s with Retry-After
                                                  (run with --limit 60 --window 1m --block-after 0)
  GET|POST|DELETE /admin/throttle                 answer per-minute requests 429 with Retry-After for a while:
       {"for_ms":5000,"retry_after_s":2}
  GET  /stats[?ids=1]                             counters per key (by fingerprint) and totals
  GET|POST|DELETE /admin/faults                   faults in force; POST changes the fields sent:
       {"error_rate":0.3,"error_status":503,"error_after":false,"extra_delay_ms":200,
        "extra_in_delay_ms":0,"spike_share":0.01,"spike_delay_ms":300,
        "down_for_ms":2000,"down_drop":false}
  POST /admin/reset-stats                         zero the counters (rules' state stays)
  METHOD /path of the model's cost table          served as /api/request (key also in X-MBX-APIKEY),
                                                  or signed as /api/private when API-Sign is sent

Models (--model): reference (default), binance (weights per IP in calendar minutes, orders per
account, 418 bans, X-MBX-* headers), kraken (a decaying counter per key, Kraken's answer format),
llm (requests and tokens per organization, usage in the answer and in OpenAI/Anthropic headers).
Every other flag changes the model; see docs/simulator.md.

Durations take a unit: 50ms, 1s. The base URL is printed on stdout once listening.`

// options are the command line's settings.
type options struct {
	listen string
	log    *slog.Logger
	cfg    exchange.Config
}

// parseFlags reads the command line into options. It returns flag.ErrHelp for
// --help (after printing the usage on stdout) and a cli.UsageError for a mistake.
func parseFlags(args []string, stdout, stderr io.Writer) (options, error) {
	def := exchange.DefaultConfig()
	o := options{cfg: def}
	cmd := cli.NewCommand("exchange", usageText, stdout, stderr)
	fs := cmd.Flags
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "`address` to serve on; port 0 picks a free one")
	keyList := fs.String("keys", "", "comma-separated `list` of API keys, each secret or name=secret (default: the reference's five, named key1 to key5)")
	keysFile := fs.String("keys-file", "", "read API keys from `file`, one a line: secret or name=secret; # starts a comment")
	var files cli.SecretFiles
	files.Register(fs)
	fs.IntVar(&o.cfg.Limit, "limit", def.Limit, "accepted requests a key's ring remembers: at most this many per window+1 ms")
	fs.DurationVar(&o.cfg.Window, "window", def.Window, "an arrival is accepted only if more than this past the limit-th previous accepted one (whole ms)")
	minDelay := fs.Duration("min-delay", def.InDelay.Min, "least delay, incoming and outgoing (whole ms)")
	maxDelay := fs.Duration("max-delay", def.InDelay.Max, "greatest delay, incoming and outgoing (whole ms)")
	inMin := fs.Duration("in-min-delay", 0, "least incoming delay, if not --min-delay")
	inMax := fs.Duration("in-max-delay", 0, "greatest incoming delay, if not --max-delay")
	outMin := fs.Duration("out-min-delay", 0, "least outgoing delay, if not --min-delay")
	outMax := fs.Duration("out-max-delay", 0, "greatest outgoing delay, if not --max-delay")
	fs.IntVar(&o.cfg.BlockAfter, "block-after", def.BlockAfter, "rate-limit rejections that block a key until restart; 0 never blocks")
	fs.Uint64Var(&o.cfg.Seed, "seed", 0, "random seed for delays and faults; 0 picks one and logs it")
	fs.IntVar(&o.cfg.MaxIDs, "max-ids", def.MaxIDs, "distinct req_ids kept for the exactly-once counts in /stats")
	fs.Float64Var(&o.cfg.Faults.ErrorRate, "error-rate", 0, "fault: share (0 to 1) of requests answered --error-status")
	fs.IntVar(&o.cfg.Faults.ErrorStatus, "error-status", 503, "fault: `status` (5xx) of injected errors and of a down server")
	fs.BoolVar(&o.cfg.Faults.ErrorAfter, "error-after", false, "fault: inject errors after the request was checked and done (its answer is lost), not before")
	fs.DurationVar(&o.cfg.Faults.ExtraDelay, "extra-delay", 0, "fault: added to every outgoing delay")
	fs.DurationVar(&o.cfg.Faults.ExtraInDelay, "extra-in-delay", 0, "fault: added to every incoming delay (arrivals later than the rules allow for)")
	fs.Float64Var(&o.cfg.Faults.SpikeShare, "spike-share", 0, "fault: share (0 to 1) of requests whose incoming delay --spike-delay lengthens")
	fs.DurationVar(&o.cfg.Faults.SpikeDelay, "spike-delay", 0, "fault: extra incoming delay of a spike, such as 300ms (see --spike-share)")
	fs.DurationVar(&o.cfg.Faults.DownFor, "down-for", 0, "fault: be down for this long from the start, answering --error-status at once")
	fs.BoolVar(&o.cfg.Faults.DownDrop, "down-drop", false, "fault: while down, close connections without an answer")
	m := registerModelFlags(fs)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return o, err
	}
	o.log = cmd.Logger()
	fail := func(format string, args ...any) (options, error) {
		return o, cli.UsageError{Err: fmt.Errorf(format, args...)}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.cfg.InDelay = exchange.DelayRange{Min: *minDelay, Max: *maxDelay}
	o.cfg.OutDelay = o.cfg.InDelay
	override := func(name string, to *time.Duration, from time.Duration) {
		if set[name] {
			*to = from
		}
	}
	override("in-min-delay", &o.cfg.InDelay.Min, *inMin)
	override("in-max-delay", &o.cfg.InDelay.Max, *inMax)
	override("out-min-delay", &o.cfg.OutDelay.Min, *outMin)
	override("out-max-delay", &o.cfg.OutDelay.Max, *outMax)

	if err := m.apply(&o.cfg, set); err != nil {
		return fail("%w", err)
	}
	switch {
	case set["keys"] && set["keys-file"]:
		return fail("give --keys or --keys-file, not both")
	case set["keys"]:
		ks, err := keys.Parse("--keys", strings.NewReader(strings.ReplaceAll(*keyList, ",", "\n")))
		if err != nil {
			return fail("%w", err)
		}
		o.cfg.Keys = ks
	case set["keys-file"]:
		if err := files.Check(o.log, "--keys-file", *keysFile); err != nil {
			return o, err
		}
		ks, err := keys.Load(*keysFile, nil)
		if err != nil {
			return fail("--keys-file: %w", err)
		}
		o.cfg.Keys = ks
	}
	return o, nil
}
