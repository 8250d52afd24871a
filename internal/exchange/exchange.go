// Package exchange simulates the rate-limited upstream API that ratefleet pushes
// requests to. By default it follows the reference exchange's rules exactly, so that a
// result measured against the simulator holds against the real upstream; every number
// in the rules is a Config field.
//
// # The rules
//
// One endpoint, GET /api/request, with api_key, nonce and req_id read from the query
// string or from a form body (application/x-www-form-urlencoded) sent with the GET; a
// name in both places takes the query string's value. Every answer is compact JSON with
// Content-Type: application/json. One request goes through these steps, in order:
//
//  1. Unknown api_key: the outgoing delay (step 6), then 401
//     {"status":"error","error_msg":"invalid api key"}. There is no incoming delay.
//  2. Incoming delay: a whole number of milliseconds drawn uniformly from
//     Config.InDelay (0..50 ms, both ends included). The request's arrival time is the
//     clock's time after this sleep, in whole Unix milliseconds, read under the key's
//     lock: the request of a key that arrives first is checked first.
//  3. Blocked key: once the key has had Config.BlockAfter (10) rate-limit rejections
//     in the server's lifetime, every request of the key gets 429
//     {"status":"error","error_msg":"too many rate limit errors: blocked"}. A blocked
//     key never recovers until the server restarts.
//  4. Rate limit: each key keeps the arrival times of its last Config.Limit (20)
//     accepted requests in a ring that starts all zeros. A request is accepted only if
//     its arrival minus the arrival of the Limit-th previous accepted request is more
//     than Config.Window (1000 ms). Otherwise the key counts one rejection and the
//     answer is 429 {"status":"error","error_msg":"exceeded rate limit"}. A rejected
//     request does not enter the ring.
//  5. Nonce, checked after step 4, so a request with a bad nonce has already used a
//     rate slot: the nonce must parse as a base-10 int64 and be greater than the key's
//     last accepted nonce (initially 0); otherwise 400
//     {"status":"error","error_msg":"invalid nonce"}. Only a valid nonce moves the
//     key's last nonce.
//  6. Outgoing delay, drawn like the incoming one from Config.OutDelay, then 200
//     {"status":"OK","req_id":"<req_id as sent>"}. Error answers get the same delay.
//
// Requests are served concurrently: two requests of one key can be in flight at once,
// and they can arrive in the other order than they were sent. A client that gives up
// during a delay does not stop its request: it is still checked and counted, as a real
// upstream would.
//
// It follows that a key accepts at most Limit requests in any span [t−Window, t] of
// Window+1 ms: 20 per 1001 ms by default.
//
// # Models
//
// Other upstreams limit otherwise (docs/simulator.md). Config's model fields, all off
// by default, add to the steps above: a ban of the whole upstream checked first
// (418 with Retry-After, Ban); rate rules asked after the key's ring, each a sliding
// window, a calendar window or a decaying counter (Rules), counting requests, weight,
// orders or tokens (Costs, Tokens), per key, per account (Accounts) or for every key
// at once; Retry-After on their 429s; usage headers (UsageHeaders); a client outside
// the fleet that uses the same keys (Outside); Kraken's answer format (Format); no
// nonce (NoNonce). ModelConfig gives the built-in models: reference, binance, kraken
// and llm. A call of a key is admitted only when the ring and every rule it falls
// under have room for its cost, and is then charged to all of them.
//
// The files, by what they hold:
//
//	exchange.go   Config and its checks, the reference's keys
//	server.go     New, Open, Close, the routes
//	api.go        the reference's endpoint and the steps of one call
//	account.go    one key: its ring, rejections, block and nonce
//	modes.go      the signed and the per-minute (LLM) endpoints, the throttle
//	paths.go      the cost table's own paths
//	limits.go     the model's state: one lock, the rules asked and charged
//	rules.go      Rule: its kind, dimension and scope
//	counters.go   the three kinds of counter
//	scopes.go     who shares a counter: key, account, ip
//	costs.go      what a call costs: the path table
//	tokens.go     what an LLM call costs in tokens
//	usage.go      the usage headers
//	penalties.go  the upstream's ban
//	outside.go    the outside client
//	format.go     the answer formats
//	models.go     the built-in models
//	bounds.go     per-rule stats and the bound a perfect client reaches
//	stats.go      GET /stats, reset
//	faults.go     injected faults
//	ids.go        the req_id ledger
//
// # Faults
//
// Faults are off by default. They are set in Config.Faults and changed at run time
// through the admin endpoint:
//
//	GET    /admin/faults   the faults in force
//	POST   /admin/faults   change them: fields left out keep their value
//	DELETE /admin/faults   turn all faults off
//
// with the JSON shape (every field optional in a POST):
//
//	{
//	  "error_rate": 0.3,        share of requests of known keys answered error_status
//	  "error_status": 503,      a 5xx status for injected errors; 0 means 503
//	  "error_after": false,     false: the error replaces the request before its checks
//	                            (no rate slot, no nonce, nothing done); true: the request
//	                            is checked and done first and only its answer is lost
//	  "extra_delay_ms": 200,    added to the outgoing delay of every answer
//	  "extra_in_delay_ms": 0,   added to the incoming delay: arrivals then fall later
//	                            than the rules' 50 ms after sending
//	  "spike_share": 0.01,      share of requests whose incoming delay spike_delay_ms
//	  "spike_delay_ms": 300,    lengthens: isolated late arrivals
//	  "down_for_ms": 2000,      from now on, for this long, the server is down: every
//	                            request is answered error_status at once; a GET shows
//	                            what is left of the period
//	  "down_drop": false        while down, close the connection without an answer
//	}
//
// POST and DELETE answer the faults now in force; a bad field is a 400 that says why.
// An injected error's body is {"status":"error","error_msg":"injected fault"}.
//
// # Stats
//
// GET /stats answers the server's view as the JSON form of Stats: counters per key,
// each named by its name and fingerprint (never its secret), and totals. For exactly
// once, the server counts per req_id the requests that passed every check (the 200s,
// plus any whose 200 an error_after fault replaced): distinct_ids and duplicates (ids
// done more than once). GET /stats?ids=1 adds the lists ids and duplicate_ids. The id
// set holds at most Config.MaxIDs ids; ids past that are counted in untracked_ids and
// not checked for duplicates. POST /admin/reset-stats zeroes the counters and the id
// set, not the rules' state (rings, rejections, blocks, nonces, counters, bans). With a
// model, Stats also holds the rejections, the 418s and, per rule, what it counted, its
// peak and the bound a perfect client could reach over the run (RuleStats).
//
// The admin and stats endpoints are not protected: listen on loopback.
package exchange

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/keys"
)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("invalid config")

// referenceKeys are the reference exchange's five API keys.
const referenceKeys = `
UT4NHL1J796WCHULA1750MXYF9F5JYA6
8TY2F3KIL38T741G1UCBMCAQ75XU9F5O
954IXKJN28CBDKHSKHURQIVLQHZIEEM9
EUU46ID478HOO7GOXFASKPOZ9P91XGYS
46V5EZ5K2DFAGW85J18L50SGO25WJ5JE
`

// DefaultKeys returns the reference exchange's five API keys, named key1 to key5.
func DefaultKeys() []keys.Key {
	secrets := strings.Fields(referenceKeys)
	out := make([]keys.Key, len(secrets))
	for i, secret := range secrets {
		out[i] = keys.New(fmt.Sprintf("key%d", i+1), secret)
	}
	return out
}

// DelayRange is a range of whole-millisecond delays, both ends included.
type DelayRange struct {
	Min, Max time.Duration
}

// String writes the range as Min..Max.
func (d DelayRange) String() string { return fmt.Sprintf("%v..%v", d.Min, d.Max) }

// Config sets the rules of a Server. Start from DefaultConfig, which is the reference
// exchange, and change what a test or a run needs.
type Config struct {
	// Keys are the valid API keys. Stats and logs name them by Name and Fingerprint.
	Keys []keys.Key
	// Limit is how many accepted requests a key's ring remembers: at most Limit
	// requests of a key are accepted in any Window+1 ms.
	Limit int
	// Window is the span, in whole milliseconds, that a request's arrival must be
	// more than past the Limit-th previous accepted arrival of its key.
	Window time.Duration
	// InDelay is the range of the incoming delay, before the arrival time is taken.
	InDelay DelayRange
	// OutDelay is the range of the outgoing delay, before every answer.
	OutDelay DelayRange
	// BlockAfter is the number of rate-limit rejections after which a key is blocked
	// for the server's lifetime. 0 never blocks.
	BlockAfter int
	// Seed seeds the server's random numbers (delays and faults). 0 picks a random
	// seed, which the server logs.
	Seed uint64
	// MaxIDs bounds the set of req_ids that Stats counts for exactly once.
	MaxIDs int
	// Faults are the faults in force at start. Faults.DownFor counts from New.
	Faults Faults

	// The fields below model other upstreams (docs/simulator.md); all are off in
	// DefaultConfig, and ModelConfig fills them for the built-in models.

	// Model names the model the rules follow, for stats and logs: "" or
	// "reference" for the reference.
	Model string
	// Rules are rate rules beyond each key's ring (rules.go): every call is
	// charged to every rule it falls under, and admitted only if the ring and all
	// of them have room. With Rules, Limit may be 0: the keys have no ring.
	Rules []Rule
	// Accounts gives keys, by name, the account they belong to, for rules of
	// scope account; the AnyKey entry gives the others'. A key it leaves out is an
	// account of its own.
	Accounts map[string]string
	// Costs is the per-path cost table: the weight and orders of a call by method
	// and path. A call not in it costs weight 1 and no order. Paths that are none
	// of the fixed endpoints are served as /api/request is (paths.go).
	Costs []PathCost
	// Tokens, when set, makes POST /v1/complete count each call's input and output
	// tokens, for rules counting tokens, and report them in its answer.
	Tokens *TokenCounting
	// Ban is the upstream's penalty after repeated rejections: 418 for every key
	// for a while (penalties.go). The zero value never bans.
	Ban Ban
	// Outside is a client outside the fleet that uses the same keys (outside.go).
	// The zero value makes no calls.
	Outside Outside
	// Format is the body format of the reference-shaped answers (format.go).
	Format Format
	// UsageHeaders are the styles of usage headers every checked answer carries
	// (usage.go).
	UsageHeaders []HeaderStyle
	// NoNonce skips step 5: no nonce is read or checked (Binance, LLM APIs).
	NoNonce bool

	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Sleep waits for d, or until ctx is done and then returns ctx.Err(); nil means a
	// timer. Every delay goes through it, so tests can record or control delays.
	Sleep func(ctx context.Context, d time.Duration) error
}

// DefaultConfig returns the reference exchange's rules: its five keys, 20 requests per
// more than 1000 ms, delays of 0..50 ms each way, blocked after 10 rejections; no
// faults; an id set of up to a million ids.
func DefaultConfig() Config {
	return Config{
		Keys:       DefaultKeys(),
		Limit:      20,
		Window:     1000 * time.Millisecond,
		InDelay:    DelayRange{Min: 0, Max: 50 * time.Millisecond},
		OutDelay:   DelayRange{Min: 0, Max: 50 * time.Millisecond},
		BlockAfter: 10,
		MaxIDs:     1 << 20,
	}
}

// validate returns every problem of c, each saying what to fix.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if len(c.Keys) == 0 {
		bad("no API keys: give at least one (DefaultKeys has the reference's five)")
	}
	names, secrets := map[string]bool{}, map[string]bool{}
	for i, k := range c.Keys {
		switch {
		case k.Name() == "":
			bad("key %d has no name (stats and logs name keys, never show secrets)", i+1)
		case k.Secret() == "":
			bad("key %d (%q) has an empty secret", i+1, k.Name())
		case secrets[k.Secret()]:
			bad("key %d (%s) repeats the secret of an earlier key; each key needs its own", i+1, k)
		case names[k.Name()]:
			bad("key %d: name %q is used twice; names must be unique", i+1, k.Name())
		}
		names[k.Name()], secrets[k.Secret()] = true, true
	}
	noRing := c.Limit == 0 && len(c.Rules) > 0 // the Rules limit the keys
	if c.Limit < 1 && !noRing {
		bad("Limit %d must be at least 1 (accepted requests per key per window), or 0 with Rules", c.Limit)
	}
	if !noRing && (c.Window <= 0 || c.Window%time.Millisecond != 0) {
		bad("Window %v must be a positive whole number of milliseconds", c.Window)
	}
	for _, d := range []struct {
		name string
		r    DelayRange
	}{{"InDelay", c.InDelay}, {"OutDelay", c.OutDelay}} {
		switch {
		case d.r.Min < 0 || d.r.Min%time.Millisecond != 0 || d.r.Max%time.Millisecond != 0:
			bad("%s %v: both ends must be whole milliseconds, at least 0", d.name, d.r)
		case d.r.Max < d.r.Min:
			bad("%s %v: Max must be at least Min", d.name, d.r)
		}
	}
	c.validateModel(bad, names)
	if c.BlockAfter < 0 {
		bad("BlockAfter %d must be at least 0 (0 never blocks a key)", c.BlockAfter)
	}
	if c.MaxIDs < 0 {
		bad("MaxIDs %d must be at least 0 (0 counts no ids)", c.MaxIDs)
	}
	if err := c.Faults.validate(); err != nil {
		bad("Faults: %w", err)
	}
	return errors.Join(errs...)
}

// sleepTimer is the default Config.Sleep.
func sleepTimer(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
