// Package streams loads, validates and applies streams.yaml: the NATS JetStream
// streams, the workers' consumer and the KV buckets that ratefleet runs on.
//
// Loading is strict: an unknown field is an error naming the field and its line.
// Validation checks what the rest of ratefleet relies on (a work-queue requests
// stream, a graveyard that never drops an entry, a lease bucket with history 1) and
// says how to fix what is wrong. Apply creates what is missing and updates what
// differs; applying the same file twice changes nothing.
package streams

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/ratefleet/ratefleet/wire"
)

// ErrInvalid is wrapped by every error that reports a problem in the file itself.
var ErrInvalid = errors.New("invalid streams configuration")

// Config is the parsed streams.yaml.
type Config struct {
	// Source names where the configuration came from, for error messages.
	Source string `yaml:"-"`

	Version   int       `yaml:"version"`
	Requests  Requests  `yaml:"requests"`
	Graveyard Graveyard `yaml:"graveyard"`
	Stats     Stats     `yaml:"stats"`
	Results   Results   `yaml:"results"`
	KV        KV        `yaml:"kv"`

	// Routes are the keys, accounts and labels requests may be routed to, each
	// served by a consumer of its own per priority (RouteConsumers). They come
	// from the keys file the admin applies with (streams apply --keys-file),
	// never from streams.yaml; without them only the consumers of requests any
	// key may send are declared.
	Routes []wire.Route `yaml:"-"`
}

// Results declares the stream every request's final outcome is published to, one
// subject per request (the stream's subject with its last token the encoded id),
// and the subjects a request may ask its result to be sent to as well.
type Results struct {
	Stream Stream `yaml:"stream"`
	// ReplyPrefix is the prefix every request's reply subject must start with,
	// ending in a dot: a request cannot reply into $JS., $KV. or the fleet's own
	// subjects.
	ReplyPrefix string `yaml:"reply_prefix"`
}

// Prefix returns the results subject without its final wildcard, ending in a
// dot: "ratefleet.results.".
func (r Results) Prefix() string {
	if len(r.Stream.Subjects) == 0 {
		return ""
	}
	return strings.TrimSuffix(r.Stream.Subjects[0], ">")
}

// Requests declares the work queue and the consumers the workers share. Its
// stream has four subjects: the bare one (Subject), for requests of no owner,
// Subject.*, whose last token names the user that published the request (see
// wire.Owner), and Subject.*.* and Subject.*.*.*, which add a priority and a
// route (wire.PlaceOf). Consumer declares the settings of every consumer, and
// the name of the one of batch requests any key may send; the others are
// derived from it (RouteConsumers).
type Requests struct {
	Stream   Stream   `yaml:"stream"`
	Consumer Consumer `yaml:"consumer"`
}

// Subject returns the bare requests subject, "ratefleet.requests": a user
// publishes on Subject.<user> (wire.Owner.RequestSubject).
func (r Requests) Subject() string {
	if len(r.Stream.Subjects) == 0 {
		return ""
	}
	return r.Stream.Subjects[0]
}

// Graveyard declares the stream of requests given up on and the stream that keeps
// the server's advisories about them.
type Graveyard struct {
	Stream     Stream `yaml:"stream"`
	Advisories Stream `yaml:"advisories"`
}

// Stats declares the stream workers publish their statistics to.
type Stats struct {
	Stream Stream `yaml:"stream"`
}

// KV declares the key-value buckets.
type KV struct {
	Leases   Bucket `yaml:"leases"`
	KeyState Bucket `yaml:"key_state"`
	Attempts Bucket `yaml:"attempts"`
	// Cancels holds the cancel marks callers write for their own queued
	// requests (wire.CancelKey); a worker reads a request's mark just before
	// sending it.
	Cancels Bucket `yaml:"cancels"`
	// Replays remembers each replay published, so a rerun after the requests
	// stream's duplicate window stores nothing twice.
	Replays Bucket `yaml:"replays"`
}

// Stream declares one JetStream stream. Zero numeric limits mean unlimited.
type Stream struct {
	Name              string        `yaml:"name"`
	Subjects          []string      `yaml:"subjects"`
	Retention         string        `yaml:"retention"`
	Storage           string        `yaml:"storage"`
	Replicas          int           `yaml:"replicas"`
	MaxMsgs           int64         `yaml:"max_msgs"`
	MaxBytes          int64         `yaml:"max_bytes"`
	MaxAge            time.Duration `yaml:"max_age"`
	MaxMsgSize        int32         `yaml:"max_msg_size"`
	MaxMsgsPerSubject int64         `yaml:"max_msgs_per_subject"`
	Discard           string        `yaml:"discard"`
	DuplicateWindow   time.Duration `yaml:"duplicate_window"`
	// AllowDirect answers $JS.API.DIRECT.GET requests: a caller reads its
	// result by the subject-named form, the only read NATS permissions can
	// confine to the caller's own subjects.
	AllowDirect bool `yaml:"allow_direct"`
}

// Filter returns the one subject filter that matches every message of the
// stream: its subject, or > when it has several.
func (s Stream) Filter() string {
	if len(s.Subjects) == 1 {
		return s.Subjects[0]
	}
	return ">"
}

// Consumer declares the workers' durable pull consumer.
type Consumer struct {
	Durable       string        `yaml:"durable"`
	AckWait       time.Duration `yaml:"ack_wait"`
	MaxDeliver    int           `yaml:"max_deliver"`
	MaxAckPending int           `yaml:"max_ack_pending"`
	// RetryDelays is no longer read: the upstream profile's retry section says
	// when a failed attempt is tried again. Declaring it is an error that says so.
	RetryDelays []time.Duration `yaml:"retry_delays"`
	// Priorities declares a consumer of urgent requests beside the one of batch
	// requests, so that urgent ones are taken first. Without it and without
	// routes (streams apply --keys-file), the one consumer takes every request,
	// urgent ones as batch, with no filter: the server then does the least work
	// a request.
	Priorities bool `yaml:"priorities"`
}

// Bucket declares one KV bucket.
type Bucket struct {
	Bucket   string `yaml:"bucket"`
	Storage  string `yaml:"storage"`
	Replicas int    `yaml:"replicas"`
	// LeaseTTL is how long a lease entry lives without renewal (leases bucket only).
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// MaxAge removes entries older than this (attempts bucket); 0 keeps them.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes bounds the bucket's size; -1 or 0 is unlimited. A full bucket
	// refuses new entries.
	MaxBytes int64 `yaml:"max_bytes"`
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read streams configuration: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a streams.yaml document; source names it in errors.
func Parse(source string, data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField())
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w:\n%s", source, ErrInvalid, yaml.FormatError(err, false, true))
	}
	c.Source = source
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the configuration and reports every problem found, each with the
// way to fix it.
func (c *Config) Validate() error {
	v := validator{source: c.Source}
	if c.Version != 1 {
		v.addf("version", "is %d; this ratefleet reads version 1 (set `version: 1`)", c.Version)
	}
	v.stream("requests.stream", c.Requests.Stream, "workqueue")
	if c.Requests.Stream.Discard != "new" {
		v.addf("requests.stream.discard", "is %q; use `new` so a full queue refuses new requests (the producer backs off) instead of silently dropping old ones", c.Requests.Stream.Discard)
	}
	if rs := c.Requests.Stream.Subjects; len(rs) != 4 || strings.ContainsAny(rs[0], "*>") || rs[1] != rs[0]+".*" || rs[2] != rs[0]+".*.*" || rs[3] != rs[0]+".*.*.*" {
		base := "ratefleet.requests"
		if len(rs) > 0 && !strings.ContainsAny(rs[0], "*>") {
			base = rs[0]
		}
		v.addf("requests.stream.subjects", "%q must be [%s, %s.*, %s.*.*, %s.*.*.*]: a request published on %s.<user> belongs to that NATS user, and only that user may read its result and reply (docs/security.md); %s takes requests of no user, on a server without users; the longer forms add a priority and a route (docs/routing.md)", rs, base, base, base, base, base, base)
	}
	if c.Requests.Stream.DuplicateWindow <= 0 {
		v.addf("requests.stream.duplicate_window", "must be positive (for example 2m) so a retried publish is stored once")
	}
	cons := c.Requests.Consumer
	if !validName(cons.Durable) || len(cons.Durable) > maxDurable {
		v.addf("requests.consumer.durable", "%q must be a name of 1 to %d characters without spaces, dots, '*' or '>' (the consumers of routes add to it)", cons.Durable, maxDurable)
	}
	for _, r := range c.Routes {
		if r.Kind == wire.RouteAny {
			continue
		}
		if err := wire.CheckRouteName(r.Name); err != nil {
			v.addf("routes", "%s: %v", r.Kind, err)
		}
	}
	if cons.AckWait < time.Second {
		v.addf("requests.consumer.ack_wait", "%s must be at least 1s (how long a worker may hold a request before it is redelivered)", cons.AckWait)
	}
	if cons.MaxDeliver < 1 {
		v.addf("requests.consumer.max_deliver", "%d must be at least 1 (the number of attempts a request gets)", cons.MaxDeliver)
	}
	if cons.MaxAckPending < 1 {
		v.addf("requests.consumer.max_ack_pending", "%d must be at least 1 (requests in flight across the fleet)", cons.MaxAckPending)
	}
	if len(cons.RetryDelays) > 0 {
		v.addf("requests.consumer.retry_delays", "is no longer read: retry delays are the upstream profile's (its retry section: first, factor, max_delay, jitter, max_attempts, max_time); remove it")
	}
	v.stream("graveyard.stream", c.Graveyard.Stream, "limits")
	if c.Graveyard.Stream.Discard != "new" {
		v.addf("graveyard.stream.discard", "is %q; use `new`: a buried request is never dropped to make room", c.Graveyard.Stream.Discard)
	}
	if c.Graveyard.Stream.MaxAge != 0 {
		v.addf("graveyard.stream.max_age", "is %s; remove it: buried requests leave the graveyard only by replay or by hand", c.Graveyard.Stream.MaxAge)
	}
	v.stream("graveyard.advisories", c.Graveyard.Advisories, "limits")
	v.stream("stats.stream", c.Stats.Stream, "limits")
	if c.Stats.Stream.MaxMsgsPerSubject < 1 {
		v.addf("stats.stream.max_msgs_per_subject", "must be at least 1 (1 keeps each worker's last report)")
	}
	v.results(c)
	v.bucket("kv.leases", c.KV.Leases)
	if c.KV.Leases.LeaseTTL < time.Second || c.KV.Leases.LeaseTTL%time.Second != 0 {
		v.addf("kv.leases.lease_ttl", "%s must be a whole number of seconds, at least 1s (NATS per-key TTLs have 1 s granularity)", c.KV.Leases.LeaseTTL)
	}
	v.bucket("kv.key_state", c.KV.KeyState)
	v.bucket("kv.attempts", c.KV.Attempts)
	v.bucket("kv.replays", c.KV.Replays)
	v.bucket("kv.cancels", c.KV.Cancels)
	if c.KV.Cancels.MaxAge <= 0 || c.KV.Cancels.MaxBytes <= 0 {
		v.addf("kv.cancels", "max_age and max_bytes must be positive (for example 24h, longer than any request's time to live, and 67108864)")
	}
	if c.KV.Replays.MaxAge < 24*time.Hour {
		v.addf("kv.replays.max_age", "is %s; must be at least 24h: a replay is stored once for this long", c.KV.Replays.MaxAge)
	}
	if c.KV.Replays.MaxBytes <= 0 {
		v.addf("kv.replays.max_bytes", "must be set (for example 67108864)")
	}
	if c.KV.Attempts.MaxBytes <= 0 {
		v.addf("kv.attempts.max_bytes", "must be set (for example 67108864): every request that fails once writes here, and a crash can leave its log behind until max_age")
	}
	for field, b := range map[string]Bucket{"kv.key_state": c.KV.KeyState, "kv.attempts": c.KV.Attempts, "kv.replays": c.KV.Replays, "kv.cancels": c.KV.Cancels} {
		if b.LeaseTTL != 0 {
			v.addf(field+".lease_ttl", "applies to kv.leases only; remove it")
		}
	}
	for field, b := range map[string]Bucket{"kv.leases": c.KV.Leases, "kv.key_state": c.KV.KeyState} {
		if b.MaxAge != 0 {
			v.addf(field+".max_age", "must not be set: these entries must never age out")
		}
	}
	names := map[string]string{}
	for field, name := range map[string]string{
		"requests.stream": c.Requests.Stream.Name, "graveyard.stream": c.Graveyard.Stream.Name,
		"graveyard.advisories": c.Graveyard.Advisories.Name, "stats.stream": c.Stats.Stream.Name,
		"results.stream": c.Results.Stream.Name,
		"kv.leases":      "KV_" + c.KV.Leases.Bucket, "kv.key_state": "KV_" + c.KV.KeyState.Bucket,
		"kv.attempts": "KV_" + c.KV.Attempts.Bucket, "kv.replays": "KV_" + c.KV.Replays.Bucket,
		"kv.cancels": "KV_" + c.KV.Cancels.Bucket,
	} {
		if other, ok := names[name]; ok && name != "" && name != "KV_" {
			a, b := min(field, other), max(field, other)
			v.addf(b, "uses the same stream name %q as %s; give each its own", name, a)
		}
		names[name] = field
	}
	return v.err()
}

type validator struct {
	source   string
	problems []string
}

func (v *validator) addf(field, format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf("%s: %s", field, fmt.Sprintf(format, args...)))
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w:\n  %s", v.source, ErrInvalid, strings.Join(v.problems, "\n  "))
}

func (v *validator) stream(field string, s Stream, retention string) {
	if !validName(s.Name) {
		v.addf(field+".name", "%q must be a non-empty name without spaces, dots, '*' or '>'", s.Name)
	}
	if len(s.Subjects) == 0 {
		v.addf(field+".subjects", "must list at least one subject")
	}
	if s.Retention != retention {
		v.addf(field+".retention", "is %q; ratefleet needs %q here", s.Retention, retention)
	}
	v.storage(field, s.Storage)
	v.replicas(field, s.Replicas)
	if s.Discard != "new" && s.Discard != "old" {
		v.addf(field+".discard", "is %q; use `new` or `old`", s.Discard)
	}
	if s.MaxAge < 0 || s.DuplicateWindow < 0 {
		v.addf(field, "max_age and duplicate_window must not be negative")
	}
}

// results checks the results stream (bounded, one subject a request) and the
// reply prefix (confined, clear of every stream's subjects).
func (v *validator) results(c *Config) {
	r := c.Results
	v.stream("results.stream", r.Stream, "limits")
	if len(r.Stream.Subjects) != 1 || !strings.HasSuffix(r.Stream.Subjects[0], ".>") {
		v.addf("results.stream.subjects", "%q must be one subject ending in .> (then the owner's token and the request id's, encoded)", r.Stream.Subjects)
	}
	if !r.Stream.AllowDirect {
		v.addf("results.stream.allow_direct", "must be true: a caller reads its own results by direct get, the one read NATS permissions can confine to its subjects")
	}
	if r.Stream.MaxAge <= 0 || r.Stream.MaxBytes <= 0 {
		v.addf("results.stream", "max_age and max_bytes must be positive: results are kept for a bounded time and size (for example 24h and 1073741824)")
	}

	if r.Stream.Discard != "old" {
		v.addf("results.stream.discard", "is %q; use `old`: a full results stream drops its oldest results, never a new one", r.Stream.Discard)
	}
	p := r.ReplyPrefix
	switch {
	case p == "" || !strings.HasSuffix(p, ".") || strings.ContainsAny(p, " *>\t"):
		v.addf("results.reply_prefix", "%q must be a subject prefix ending in a dot, without wildcards, such as ratefleet.reply.", p)
	case strings.HasPrefix(p, "$") || strings.HasPrefix(p, "_"):
		v.addf("results.reply_prefix", "%q must not start with $ or _: a request must not reply into $JS., $KV. or inboxes", p)
	}
	for _, s := range [][]string{c.Requests.Stream.Subjects, c.Graveyard.Stream.Subjects, c.Stats.Stream.Subjects, r.Stream.Subjects} {
		for _, subj := range s {
			base := strings.TrimSuffix(strings.TrimSuffix(subj, ">"), "*")
			if p != "" && (strings.HasPrefix(subj, p) || strings.HasPrefix(p, base)) {
				v.addf("results.reply_prefix", "%q overlaps the stream subject %q: a reply must not land in a stream", p, subj)
			}
		}
	}
}

func (v *validator) bucket(field string, b Bucket) {
	if !validName(b.Bucket) {
		v.addf(field+".bucket", "%q must be a non-empty name without spaces, dots, '*' or '>'", b.Bucket)
	}
	v.storage(field, b.Storage)
	v.replicas(field, b.Replicas)
}

func (v *validator) storage(field, s string) {
	if s != "file" && s != "memory" {
		v.addf(field+".storage", "is %q; use `file` (survives a restart) or `memory`", s)
	}
}

func (v *validator) replicas(field string, n int) {
	if n < 1 || n > 5 {
		v.addf(field+".replicas", "%d must be from 1 to 5 (3 on a cluster for node-loss tolerance)", n)
	}
}

func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t.*>/\\")
}

// ErrPayload is wrapped by CheckPayload when a request the requests stream may
// store could not be buried whole.
var ErrPayload = errors.New("requests stream allows messages its graveyard entries could not hold")

// CheckPayload checks c against the connected server's max payload: every request
// the requests stream accepts must fit in a graveyard entry, which adds up to
// overhead bytes, so max_msg_size must be set and at most maxPayload - overhead.
func (c *Config) CheckPayload(maxPayload, overhead int64) error {
	limit := maxPayload - overhead
	size := int64(c.Requests.Stream.MaxMsgSize)
	if size > 0 && size <= limit {
		return nil
	}
	shown := "unset"
	if size > 0 {
		shown = fmt.Sprint(size)
	}
	return fmt.Errorf("%s: requests.stream.max_msg_size: %w: it is %s, and the server's max payload %d less %d for the graveyard entry's metadata is %d; "+
		"set max_msg_size to at most %d (or raise max_payload in the server's configuration)",
		c.Source, ErrPayload, shown, maxPayload, overhead, limit, max(limit, 0))
}
