package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/producer"
	"github.com/ratefleet/ratefleet/wire"
)

const usageText = `Publishes requests to the ratefleet queue (the requests stream of streams.yaml), each
with its id as Nats-Msg-Id so a retried publish is stored once. A full stream or a
missing answer pauses publishing (doubling up to --max-backoff) and retries the same
request; a request is never dropped without being logged with its id.

Shapes (--shape):
  seed      one request, then a pause of 0..21 whole ms, repeat: about 95/s (the default)
  rate      --rate requests a second, evenly spaced
  poisson   --rate requests a second on average, exponential gaps
  burst     --burst requests at once, repeated every --every (0: once)
  file      one JSON object a line from --file (- for stdin), as fast as the stream
            takes them: {"id":"a1","ttl_ms":1000,"payload":{...},"created":"2026-01-02T03:04:05Z"}
            every field optional (id: a new UUID, ttl_ms: --ttl, created: when read);
            "call":{"method":"POST","path":"/x","query":[{"name":"a","value":"1"}],
            "header":[...],"body":"...","content_type":"..."}, "weight":2 and
            "reply_to":"ratefleet.reply.<your user>.<anything>" and "costs":{"input_tokens":900,
            "output_tokens":512} (what the upstream counts besides weight) are optional too,
            and so are "priority":"urgent", one of "key", "account" or "label", and
            "results":"reply" or "none" (see --results)

The call (--path with --method, --query, --header, --body) is what each request asks of
the upstream; without --path the worker's profile makes its default call (the reference
exchange's GET /api/request). The worker adds the key, the nonce and the signature.

The run ends at --count requests, after --duration, when the shape or file is done, or
on SIGINT/SIGTERM (requests awaiting an ack then get --grace). The summary goes to
stdout, logs and progress to stderr. The exit status is 0 when every request was
stored, 1 when some were not or on an error, 2 for a usage error.

Routes and priorities (--key, --account or --label; --priority): only the named key, a
key of the account, or a key carrying the label sends the request; urgent requests are
taken first, and a waiting batch request at least once every 4 (docs/routing.md).

  producer cancel [connection flags] ID...
            cancel queued requests of this user by id: each ends buried as cancelled,
            never sent; one already served or buried is reported as such (exit 1)`

// shapeNames lists the --shape values.
const shapeNames = "seed, rate, poisson, burst, file"

// options are the command line's settings.
type options struct {
	nats        cli.NATS
	streamsFile string
	shape       string
	rate        float64
	burst       int
	every       time.Duration
	file        string
	ttl         time.Duration
	payload     json.RawMessage
	seed        uint64
	idsOut      string
	resultsOut  string
	resultsWait time.Duration
	call        *wire.Call
	weight      int
	route       wire.Request // Key, Account, Label, Priority
	results     wire.Results
	log         *slog.Logger
	cfg         producer.Config
}

// parseFlags reads the command line into options. It returns flag.ErrHelp for
// --help (after printing the usage on stdout) and a cli.UsageError for a mistake.
func parseFlags(args []string, stdout, stderr io.Writer) (options, error) {
	def := producer.DefaultConfig()
	o := options{cfg: def}
	cmd := cli.NewCommand("producer", usageText, stdout, stderr)
	fs := cmd.Flags
	o.nats.Register(fs)
	fs.StringVar(&o.streamsFile, "streams", "", "streams.yaml to check the server against (default: the built-in one)")
	fs.StringVar(&o.shape, "shape", "", "load `shape`: "+shapeNames+" (default seed, or file with --file)")
	fs.Float64Var(&o.rate, "rate", 95, "requests a second for --shape rate and poisson")
	fs.IntVar(&o.burst, "burst", 100, "requests in one burst for --shape burst")
	fs.DurationVar(&o.every, "every", 0, "repeat the burst this often; 0 bursts once")
	fs.StringVar(&o.file, "file", "", "JSON-lines `file` of requests, - for stdin (implies --shape file)")
	onBad := fs.String("on-bad-line", "stop", "on a bad input line: stop (the run fails, naming the line) or skip (log it, count it, go on)")
	fs.Int64Var(&o.cfg.Count, "count", 0, "stop after this many requests; 0 for no limit")
	fs.DurationVar(&o.cfg.Duration, "duration", 0, "stop making requests after this long; 0 for no limit")
	fs.DurationVar(&o.ttl, "ttl", wire.DefaultTTL, "time to live of each request (of a file line without ttl_ms)")
	payload := fs.String("payload", "", "literal JSON `value` carried by every generated request (default none)")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed for the seed and poisson shapes; 0 picks one and logs it")
	fs.IntVar(&o.cfg.MaxPending, "max-pending", def.MaxPending, "requests out at once, awaiting an ack or a retry; the shape waits beyond it")
	fs.IntVar(&o.cfg.MaxRetries, "max-retries", def.MaxRetries, "retries of one request before it is given up on (and logged); -1 retries until interrupted")
	fs.DurationVar(&o.cfg.AckTimeout, "ack-timeout", def.AckTimeout, "wait this long for the stream's ack before retrying")
	fs.DurationVar(&o.cfg.MaxBackoff, "max-backoff", def.MaxBackoff, "longest pause after the stream refuses requests (starts at 50ms, doubles)")
	fs.DurationVar(&o.cfg.Grace, "grace", def.Grace, "on SIGINT/SIGTERM, wait this long for outstanding acks")
	fs.DurationVar(&o.cfg.Progress, "progress", def.Progress, "log progress this often; 0 disables")
	fs.StringVar(&o.idsOut, "ids-out", "", "write the id of every request the stream acknowledged to `file`, one a line")
	method := fs.String("method", "", "the upstream call's HTTP `method` (default GET; the profile's default call when no --path)")
	path := fs.String("path", "", "the upstream call's `path` under the profile's base URL, such as /0/private/Balance (default: the profile's default call)")
	var query, header params
	fs.Var(&query, "query", "a query parameter of the call, `name=value`; repeat for more")
	fs.Var(&header, "header", "a header of the call, `Name: value`; repeat for more")
	body := fs.String("body", "", "the call's `body`, sent as given")
	contentType := fs.String("content-type", "", "the body's media `type` (default application/x-www-form-urlencoded)")
	fs.StringVar(&o.resultsOut, "results-out", "", "after publishing, write each request's result (served: status, headers, body; or buried: reason) to `file` as JSON lines, - for stdout")
	fs.DurationVar(&o.resultsWait, "results-wait", 30*time.Second, "how long --results-out waits for the last results")
	fs.IntVar(&o.weight, "weight", 0, "units of the key's rate windows each request takes, where the upstream counts weights (default 1)")
	fs.StringVar(&o.route.Key, "key", "", "send each request only with the API key of this `name`")
	fs.StringVar(&o.route.Account, "account", "", "send each request only with a key of this `account` (keys file account=)")
	fs.StringVar(&o.route.Label, "label", "", "send each request only with a key carrying this `label` (keys file labels=)")
	priority := fs.String("priority", "", "the requests' `class`: urgent (taken first) or batch (default batch)")
	results := fs.String("results", "keep", "where each served request's result goes: keep (stored in the results stream and sent to its reply subject; a request delivered again after its worker stopped between the answer and the ack finds it and is not sent twice), reply (sent only: saves a store per request, but a redelivery like that sends the request again and a caller not listening never learns the result) or none (neither)")
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return o, err
	}
	o.log = cmd.Logger()
	fail := func(format string, args ...any) (options, error) {
		return o, cli.UsageError{Err: fmt.Errorf(format, args...)}
	}
	switch {
	case o.shape == "" && o.file != "":
		o.shape = "file"
	case o.shape == "":
		o.shape = "seed"
	case o.shape == "file" && o.file == "":
		return fail("--shape file needs --file: a path, or - for stdin")
	case o.shape != "file" && o.file != "":
		return fail("--file goes with --shape file, not --shape %s", o.shape)
	}
	if !slices.Contains(strings.Split(shapeNames, ", "), o.shape) {
		return fail("--shape %q: use one of %s", o.shape, shapeNames)
	}
	switch *onBad {
	case "stop":
	case "skip":
		o.cfg.SkipBadLines = true
	default:
		return fail("--on-bad-line %q: use stop or skip", *onBad)
	}
	if *payload != "" {
		if !json.Valid([]byte(*payload)) {
			return fail("--payload %q: not valid JSON (quote a string: '\"text\"')", *payload)
		}
		o.payload = json.RawMessage(*payload)
	}
	switch {
	case *path != "":
		o.call = &wire.Call{Method: strings.ToUpper(*method), Path: *path, Query: query.list, Header: header.list, Body: *body, ContentType: *contentType}
		if err := o.call.Validate(); err != nil {
			return fail("the call (--method, --path, --query, --header, --body): %w", err)
		}
	case *method != "" || len(query.list) > 0 || len(header.list) > 0 || *body != "" || *contentType != "":
		return fail("--method, --query, --header, --body and --content-type describe a call: give its --path too")
	}
	if err := wire.CheckWeight(o.weight); err != nil {
		return fail("--%w", err)
	}
	o.route.Priority = wire.Priority(*priority)
	if err := o.route.CheckRoute(); err != nil {
		return fail("--key, --account, --label, --priority: %w", err)
	}
	if o.shape == "file" && (o.route.Key != "" || o.route.Account != "" || o.route.Label != "" || o.route.Priority != "") {
		return fail("--key, --account, --label and --priority set generated requests' route; a file's lines name their own")
	}
	o.results = wire.Results(*results)
	if err := o.results.Check(); err != nil {
		return fail("--%w", err)
	}
	if o.shape == "file" && o.results != wire.ResultsKeep {
		return fail("--results sets generated requests' results; a file's lines name their own (\"results\":\"reply\")")
	}
	if o.resultsOut != "" && o.results == wire.ResultsNone {
		return fail("--results-out reads the results, and --results none sends none: use keep or reply")
	}
	if wire.CheckTTL(o.ttl) != nil {
		return fail("--ttl %s: must be at least %s", o.ttl, wire.MinTTL)
	}
	if o.cfg.MaxPending < 1 {
		return fail("--max-pending %d: must be at least 1", o.cfg.MaxPending)
	}
	if o.cfg.MaxBackoff < def.MinBackoff {
		return fail("--max-backoff %s: must be at least %s", o.cfg.MaxBackoff, def.MinBackoff)
	}
	if o.cfg.Count < 0 || o.cfg.Duration < 0 || o.every < 0 || o.cfg.Progress < 0 || o.cfg.Grace <= 0 || o.cfg.AckTimeout <= 0 {
		return fail("--count, --duration, --every and --progress must not be negative; --grace and --ack-timeout must be positive")
	}
	return o, nil
}

// source builds the requests' source from the shape flags. The returned function
// closes the input file, if any; ctx ending closes stdin so a read waiting on it ends.
func (o options) source(ctx context.Context, stdin io.Reader, log *slog.Logger) (producer.Source, func(), error) {
	nop := func() {}
	if o.shape == "file" {
		if o.file == "-" {
			stop := context.AfterFunc(ctx, func() {
				if c, ok := stdin.(io.Closer); ok {
					_ = c.Close()
				}
			})
			return producer.NewLines(stdin, "stdin", o.ttl), func() { stop() }, nil
		}
		f, err := os.Open(o.file)
		if err != nil {
			return nil, nil, fmt.Errorf("--file: %w", err)
		}
		return producer.NewLines(f, o.file, o.ttl), func() { _ = f.Close() }, nil
	}
	seed := o.seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	var shape producer.Shape
	var err error
	switch o.shape {
	case "seed":
		shape = producer.NewSeed(rng)
	case "rate":
		shape, err = producer.NewRate(o.rate)
	case "poisson":
		shape, err = producer.NewPoisson(o.rate, rng)
	case "burst":
		shape, err = producer.NewBurst(o.burst, o.every)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--shape %s: %w", o.shape, err)
	}
	gen, err := producer.NewGenerator(shape, o.ttl, o.payload)
	if err != nil {
		return nil, nil, err
	}
	if err := gen.SetCall(o.call, o.weight); err != nil {
		return nil, nil, err
	}
	if err := gen.SetRoute(o.route); err != nil {
		return nil, nil, err
	}
	if o.results != wire.ResultsKeep { // keep is the default: the record stays at its lowest version
		if err := gen.SetResults(o.results); err != nil {
			return nil, nil, err
		}
	}
	attrs := []any{"shape", o.shape, "ttl", o.ttl, "count", o.cfg.Count, "duration", o.cfg.Duration}
	switch o.shape {
	case "seed":
		attrs = append(attrs, "seed", seed)
	case "rate":
		attrs = append(attrs, "rate", o.rate)
	case "poisson":
		attrs = append(attrs, "rate", o.rate, "seed", seed)
	case "burst":
		attrs = append(attrs, "burst", o.burst, "every", o.every)
	}
	log.Info("producing", attrs...)
	return gen, nop, nil
}

// openIDs opens --ids-out into the producer's configuration; the returned function
// closes it.
func (o *options) openIDs() (func() error, error) {
	if o.idsOut == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(o.idsOut)
	if err != nil {
		return nil, fmt.Errorf("--ids-out: %w", err)
	}
	o.cfg.IDs = f
	return func() error {
		if err := f.Close(); err != nil {
			return fmt.Errorf("--ids-out: %w", err)
		}
		return nil
	}, nil
}

// params is a repeatable flag of name=value (or "Name: value") pairs.
type params struct{ list []wire.Param }

func (p *params) String() string { return fmt.Sprint(len(p.list), " set") }

// Set reads name=value or "Name: value".
func (p *params) Set(v string) error {
	sep := "="
	if i, j := strings.Index(v, ":"), strings.Index(v, "="); i >= 0 && (j < 0 || i < j) {
		sep = ":"
	}
	name, value, ok := strings.Cut(v, sep)
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("%q: want name=value (or Name: value for a header)", v)
	}
	p.list = append(p.list, wire.Param{Name: strings.TrimSpace(name), Value: strings.TrimLeft(value, " ")})
	return nil
}
