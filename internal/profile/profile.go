// Package profile describes one upstream API: where it lives, its rate rules per
// key, where the key, the nonce and the request id go, how requests are signed,
// and what its answers mean. A profile is a YAML file, loaded strictly (an unknown
// field is an error naming its line) and validated with the way to fix each
// problem; Reference is the built-in default, the reference exchange. A profile
// may list the calls it permits (Calls): then a request's call outside the list
// is refused with ErrNotAllowed, and never sent.
//
// A profile is pure description: Build turns a request's call into the HTTP
// request to send (with the key, nonce, request id and signature), and Classify
// reads an answer. Neither does I/O, so both are tested against published
// signature vectors without a network. A key's secret and passphrase enter Build
// and leave it only as a signature, unless the profile itself places the
// passphrase in a header, as some exchanges require.
package profile

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/wire"
)

// ErrInvalid is wrapped by every error that reports a problem in a profile.
var ErrInvalid = errors.New("invalid upstream profile")

// ErrCall is wrapped by the errors of CheckCall and Build: the request's call
// cannot be made with this profile, and no retry will change that.
var ErrCall = errors.New("call not possible with this profile")

// ErrNotAllowed is wrapped by the error of CheckCall (and Build) for a call the
// profile's calls do not list. It wraps ErrCall.
var ErrNotAllowed = fmt.Errorf("%w: not among the profile's calls", ErrCall)

// Profile is one upstream API. The zero value is not valid: start from Reference
// or Load.
type Profile struct {
	// Source names where the profile came from, for error messages.
	Source string `yaml:"-"`

	Version int `yaml:"version"`
	// Name names the upstream in logs.
	Name string `yaml:"name"`
	// BaseURL is where the API lives; a call's path is joined to it.
	BaseURL string `yaml:"base_url"`
	// DefaultCall is made for a request that names no call.
	DefaultCall wire.Call `yaml:"default_call"`
	// RequestID places the request's id in each call, if set.
	RequestID *Place `yaml:"request_id"`
	// Rate is what the upstream allows each key.
	Rate Rate `yaml:"rate"`
	// Key places the API key (its id, or the secret where the key has none).
	Key Place `yaml:"key"`
	// Passphrase places the key's passphrase, if the upstream wants one.
	Passphrase *Place `yaml:"passphrase"`
	// Nonce places the key's next nonce, if the upstream wants one.
	Nonce *Nonce `yaml:"nonce"`
	// Timestamp places the send time, if the upstream wants one.
	Timestamp *Timestamp `yaml:"timestamp"`
	// Sign signs each request, if the upstream wants it.
	Sign *Sign `yaml:"sign"`
	// Answers says what the upstream's answers mean.
	Answers Answers `yaml:"answers"`
	// Retry says when a failed attempt is tried again, and when no more.
	Retry Retry `yaml:"retry"`
	// Calls lists the calls a request may make, when set: any other is refused
	// (ErrNotAllowed). Empty, a request may make any call.
	Calls []CallPattern `yaml:"calls"`
	// Usage lists the headers in which the upstream reports a rule's usage with
	// its answers, read as evidence of another client on the key (usage.go).
	Usage []UsageHeader `yaml:"usage"`

	// doc is the YAML the profile was parsed from, to tell a problem's line.
	doc []byte
}

// CallPattern is one call a profile permits: a method and a path pattern. The
// pattern is matched segment by segment against the path as the request writes
// it (escapes are not decoded): a segment matches itself, * matches any one
// segment, and ** as the last segment matches the rest of the path, none or
// more segments (/0/private/** matches /0/private and everything under it).
type CallPattern struct {
	// Method is GET, POST, PUT, PATCH or DELETE.
	Method string `yaml:"method"`
	// Path is the pattern, starting with /.
	Path string `yaml:"path"`
	// Costs is what the call costs in what the rules count (weight, orders,
	// input_tokens...), by name; the first pattern a call matches that names
	// costs gives them. A dimension it does not name costs what the request
	// says, else 0 (weight: the request's weight).
	Costs map[string]int64 `yaml:"costs"`
}

// Match reports whether the call with this method and path matches the pattern.
func (c CallPattern) Match(method, path string) bool {
	if method != c.Method {
		return false
	}
	pat, segs := strings.Split(c.Path, "/"), strings.Split(path, "/")
	for i, p := range pat {
		switch {
		case p == "**" && i == len(pat)-1:
			return len(segs) >= i
		case i >= len(segs):
			return false
		case p == "*":
			if segs[i] == "" {
				return false
			}
		case p != segs[i]:
			return false
		}
	}
	return len(segs) == len(pat)
}

// Place says where a value goes: in a query parameter, a header, a form body
// field, or the Authorization header as a bearer token (in: bearer, no name).
type Place struct {
	In   string `yaml:"in"`
	Name string `yaml:"name"`
}

// Where a value may go.
const (
	InQuery  = "query"
	InHeader = "header"
	InForm   = "form"
	InBearer = "bearer"
)

// Nonce places a strictly growing number, one per send of a key.
type Nonce struct {
	Place `yaml:",inline"`
}

// Timestamp places the send time in whole units since the Unix epoch.
type Timestamp struct {
	Place `yaml:",inline"`
	// Unit is s or ms; ms when empty.
	Unit string `yaml:"unit"`
}

// Rate is what the upstream allows one key.
type Rate struct {
	// Rules are the upstream's rules, all enforced at once (per second, per
	// minute, ...), each of its kind: at most Limit units in any Window
	// (sliding), in each calendar Window (fixed), or a counter of capacity Limit
	// falling Rate units a second (bucket).
	Rules []Rule `yaml:"rules"`
	// ClockOffset bounds how far the upstream's calendar may be from the
	// worker's clock, for fixed windows; 1s when 0 (limiter.Config.ClockOffset).
	ClockOffset time.Duration `yaml:"clock_offset"`
	// MaxDelay is the largest one-way delay assumed at start; 50ms when 0.
	MaxDelay time.Duration `yaml:"max_delay"`
	// MaxWeight is the largest weight a request may ask for; 1 when 0, meaning
	// the upstream counts requests, not weights.
	MaxWeight int `yaml:"max_weight"`
	// BanAfter is how many 429s the upstream takes before it bans a key for good;
	// 0 means it never bans (as LLM APIs).
	BanAfter int `yaml:"ban_after"`
	// GuardAfter is how many 429s quarantine a key across the fleet, below
	// BanAfter; the limiter's default when 0. Where the upstream never bans,
	// 0 means never.
	GuardAfter int `yaml:"guard_after"`
	// TrustRetryAfter: a 429's Retry-After says when the key may send again,
	// and the key waits exactly that long (not the longest window).
	TrustRetryAfter bool `yaml:"trust_retry_after"`
	// Costs says where the cost in each dimension other than requests and
	// weight is known from, by name (calls when not named).
	Costs map[string]CostSource `yaml:"costs"`
}

// Rule is one rate rule of the upstream.
type Rule struct {
	// Kind is sliding (the default), fixed or bucket; see limiter.RuleKind.
	Kind string `yaml:"kind"`
	// Limit is how many units a window holds, or a bucket's capacity.
	Limit int `yaml:"limit"`
	// Window is the window's length; for a bucket, the step its counter falls
	// in (0: continuously).
	Window time.Duration `yaml:"window"`
	// Rate is how many units a second a bucket's counter falls by.
	Rate float64 `yaml:"rate"`
	// Counts is what the rule counts: weight (the default), requests, or any
	// dimension the calls or requests give costs in (orders, input_tokens...).
	Counts string `yaml:"counts"`
	// Scope is whose count it is: key (the default), account or upstream; a
	// rule counted across keys is split evenly among them (Limits).
	Scope string `yaml:"scope"`
}

// limiterRule returns r as the limiter takes it; an unknown kind is left to
// Validate.
func (r Rule) limiterRule() limiter.Rule {
	k, err := limiter.ParseRuleKind(r.Kind)
	if err != nil {
		k = math.MaxUint8 // refused by the limiter as well
	}
	return limiter.Rule{Kind: k, Limit: r.Limit, Window: r.Window, Rate: r.Rate}
}

// Load reads and validates the profile at path.
func Load(path string) (*Profile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read upstream profile: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a profile; source names it in errors.
func Parse(source string, data []byte) (*Profile, error) {
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField())
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%s: %w:\n%s", source, ErrInvalid, yaml.FormatError(err, false, true))
	}
	p.Source, p.doc = source, data
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Reference returns the reference exchange's profile: GET /api/request with
// api_key, nonce and req_id in the query string, 20 requests per more than a
// second per key, a key banned after ten 429s, answers in its JSON format.
func Reference() *Profile {
	p, err := Parse("built-in reference profile", []byte(ReferenceYAML))
	if err != nil {
		panic(err) // the built-in profile is valid; TestReference_IsValid checks it
	}
	return p
}

// ReferenceYAML is the reference exchange's profile as a file.
const ReferenceYAML = `# The reference exchange: the built-in default profile.
version: 1
name: reference
base_url: http://127.0.0.1:8080
default_call: {method: GET, path: /api/request}
request_id: {in: query, name: req_id}
key: {in: query, name: api_key}
nonce: {in: query, name: nonce}
rate:
  rules: [{limit: 20, window: 1s}]
  max_delay: 50ms
  ban_after: 10          # ten 429s and the key is banned for good
answers:
  own_json_field: status # only a JSON answer with a status proves the request arrived
  rules:
    - {status: [200], class: done}
    - {status: [429], body: blocked, class: key_unusable}
    - {status: [429], class: rate_limited}
    - {status: [400], body: nonce, class: bad_nonce}
    - {status: [401, 403], class: key_unusable}
  otherwise: retry_later
  keep_headers: [Content-Type]
  max_body: 65536
`

// Validate checks the profile and reports every problem found, each with its
// field, its line when the profile was parsed from a file, and the way to fix it.
func (p *Profile) Validate() error {
	v := validator{source: p.Source, doc: p.doc}
	if p.Version != 1 {
		v.addf("version", "is %d; this ratefleet reads version 1 (set `version: 1`)", p.Version)
	}
	if p.Name == "" {
		v.addf("name", "must name the upstream (it appears in logs)")
	}
	if u, err := url.Parse(p.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.User != nil {
		v.addf("base_url", "%q: want http://host[:port][/prefix] or https://…, without user info or query", p.BaseURL)
	}
	if err := p.DefaultCall.Validate(); err != nil {
		v.addf("default_call", "%v", err)
	}
	if p.RequestID != nil {
		v.place("request_id", *p.RequestID, false)
	}
	v.place("key", p.Key, true)
	if p.Passphrase != nil {
		v.place("passphrase", *p.Passphrase, false)
	}
	if p.Nonce != nil {
		v.place("nonce", p.Nonce.Place, false)
	}
	if p.Timestamp != nil {
		v.place("timestamp", p.Timestamp.Place, false)
		if u := p.Timestamp.Unit; u != "" && u != "s" && u != "ms" {
			v.addf("timestamp.unit", "is %q; use s or ms", u)
		}
	}
	if p.Sign != nil {
		p.Sign.validate(&v, p)
	}
	negative := false
	if p.Rate.MaxDelay < 0 {
		v.addf("rate.max_delay", "%v is negative: give the largest one-way delay to the upstream, such as 50ms (0 for the default)", p.Rate.MaxDelay)
		negative = true
	}
	if p.Rate.ClockOffset < 0 {
		v.addf("rate.clock_offset", "%v is negative: give how far the upstream's calendar may be from this clock, such as 1s (0 for the default)", p.Rate.ClockOffset)
		negative = true
	}
	for i, r := range p.Rate.Rules {
		if r.Window < 0 {
			v.addf(fmt.Sprintf("rate.rules[%d].window", i), "%v is negative: give the window's length, such as 1s", r.Window)
			negative = true
		}
		negative = r.validateKind(&v, i) || negative
	}
	// A problem said above would be said again, less clearly, by the limiter.
	if !negative {
		p.validateLimits(&v)
	}
	if len(p.Rate.Rules) == 0 {
		v.addf("rate.rules", "must list at least one rule, such as {limit: 20, window: 1s}")
	}
	for i, r := range p.Rate.Rules {
		if r.dimension() == CountsWeight && p.Rate.MaxWeight > r.Limit {
			v.addf(fmt.Sprintf("rate.rules[%d]", i), "limit %d is below max_weight %d: a request of that weight could never be sent", r.Limit, p.Rate.MaxWeight)
		}
	}
	switch {
	case p.Rate.MaxWeight < 0 || p.Rate.MaxWeight > wire.MaxWeight:
		v.addf("rate.max_weight", "%d must be from 1 to %d (0 means 1: the upstream counts requests)", p.Rate.MaxWeight, wire.MaxWeight)
	case p.Rate.BanAfter < 0, p.Rate.BanAfter == 1:
		v.addf("rate.ban_after", "%d: use 0 (never bans) or at least 2, so the ban guard can stop the key first", p.Rate.BanAfter)
	case p.Rate.GuardAfter < 0 || (p.Rate.BanAfter > 0 && p.Rate.GuardAfter >= p.Rate.BanAfter):
		v.addf("rate.guard_after", "%d must be below ban_after %d (0 for the default)", p.Rate.GuardAfter, p.Rate.BanAfter)
	}
	p.Answers.validate(&v)
	p.Retry.validate(&v)
	v.reserved(p)
	p.validateCalls(&v)
	p.validateCosts(&v)
	p.validateUsage(&v)
	return v.err()
}

// validateKind checks what the kind of r, rule i, asks of its fields, and
// reports whether it found a problem.
func (r Rule) validateKind(v *validator, i int) bool {
	field := fmt.Sprintf("rate.rules[%d]", i)
	k, err := limiter.ParseRuleKind(r.Kind)
	switch {
	case err != nil:
		v.addf(field+".kind", "is %q; use sliding (at most limit in any window, the default), fixed (limit in each calendar window) or bucket (a counter of capacity limit falling rate a second)", r.Kind)
	case k == limiter.Bucket && r.Rate == 0:
		v.addf(field, "a bucket needs rate, the units a second its counter falls by, such as 0.33 (limit is its capacity)")
	case k == limiter.Bucket && !(r.Rate > 0):
		v.addf(field+".rate", "%g: a bucket's counter must fall by more than 0 units a second, such as 0.33", r.Rate)
	case k != limiter.Bucket && r.Rate != 0:
		v.addf(field+".rate", "only a bucket has a rate; a %v window counts limit per window: set kind: bucket, or leave rate out", k)
	default:
		return false
	}
	return true
}

// validateCalls checks the calls' patterns, and that the default call is among
// them.
func (p *Profile) validateCalls(v *validator) {
	for i, c := range p.Calls {
		field := fmt.Sprintf("calls[%d]", i)
		if !slices.Contains(wire.Methods(), c.Method) {
			v.addf(field+".method", "is %q; use one of %s", c.Method, strings.Join(wire.Methods(), ", "))
		}
		segs := strings.Split(c.Path, "/")
		switch {
		case !strings.HasPrefix(c.Path, "/"):
			v.addf(field+".path", "%q must start with /", c.Path)
		case strings.ContainsAny(c.Path, "?# \\") || strings.ContainsFunc(c.Path, func(r rune) bool { return r < ' ' || r == 0x7f }):
			v.addf(field+".path", "%q: a path pattern holds no query, space, control character or backslash", c.Path)
		case slices.Contains(segs, ".") || slices.Contains(segs, ".."):
			v.addf(field+".path", "%q must not hold . or .. segments", c.Path)
		default:
			for j, seg := range segs {
				if strings.Contains(seg, "*") && seg != "*" && !(seg == "**" && j == len(segs)-1) {
					v.addf(field+".path", "%q: * stands alone for one segment, and ** only as the last segment for the rest", c.Path)
					break
				}
			}
		}
	}
	if len(p.Calls) > 0 && !p.allows(&p.DefaultCall) {
		v.addf("default_call", "%s %s is not among the calls listed: add it to calls", p.DefaultCall.GetMethod(), p.DefaultCall.Path)
	}
}

// allows reports whether the profile permits c: it lists no calls, or c matches
// one of them.
func (p *Profile) allows(c *wire.Call) bool {
	if len(p.Calls) == 0 {
		return true
	}
	m := c.GetMethod()
	return slices.ContainsFunc(p.Calls, func(pc CallPattern) bool { return pc.Match(m, c.Path) })
}

// LimiterConfig returns base with the profile's delay bound, ban thresholds
// and the rules its usage headers report, and the rules counting requests or
// weight, each key's own (as a baseline counts; Limits gives every dimension,
// shared rules split); a profile without a nonce turns the limiter's order rule
// off.
func (p *Profile) LimiterConfig(base limiter.Config) limiter.Config {
	base.Rules = nil
	first := p.dimensions()
	for _, r := range p.Rate.Rules {
		if len(first) > 0 && r.dimension() == first[0] {
			base.Rules = append(base.Rules, r.limiterRule())
		}
	}
	if base.ClockOffset == 0 {
		base.ClockOffset = p.Rate.ClockOffset
	}
	base.TrustRetryAfter = p.Rate.TrustRetryAfter
	base.Unordered = p.Nonce == nil // no nonce: requests may arrive in any order
	base.Reported = p.reportedRules()
	if p.Rate.MaxDelay > 0 && base.MaxDelay == 0 {
		base.MaxDelay = p.Rate.MaxDelay
	}
	switch {
	case p.Rate.BanAfter == 0 && p.Rate.GuardAfter == 0:
		// The upstream never bans: a 429 costs a pause, never the key.
		base.BanThreshold, base.GuardThreshold = math.MaxInt32, math.MaxInt32-1
	case p.Rate.BanAfter == 0:
		base.BanThreshold, base.GuardThreshold = math.MaxInt32, p.Rate.GuardAfter
	default:
		base.BanThreshold, base.GuardThreshold = p.Rate.BanAfter, p.Rate.GuardAfter
	}
	return base
}

// Weight returns the units a request of weight w takes, or an error wrapping
// ErrCall when the profile does not allow it.
func (p *Profile) Weight(w int) (int, error) {
	w = max(w, 1)
	if limit := max(p.Rate.MaxWeight, 1); w > limit {
		return 0, fmt.Errorf("%w: weight %d is above the profile's max_weight %d", ErrCall, w, limit)
	}
	return w, nil
}

// Signs reports whether the profile signs requests: then every key needs an id,
// so that the secret never leaves the worker.
func (p *Profile) Signs() bool { return p.Sign != nil }

// places returns every value the profile adds to a call, by what it holds.
func (p *Profile) places() map[string]Place {
	m := map[string]Place{"key": p.Key}
	if p.RequestID != nil {
		m["request_id"] = *p.RequestID
	}
	if p.Passphrase != nil {
		m["passphrase"] = *p.Passphrase
	}
	if p.Nonce != nil {
		m["nonce"] = p.Nonce.Place
	}
	if p.Timestamp != nil {
		m["timestamp"] = p.Timestamp.Place
	}
	if p.Sign != nil {
		m["sign"] = Place{In: p.Sign.In, Name: p.Sign.Name}
	}
	return m
}

// CheckCall reports, wrapping ErrCall, a call that the profile's calls do not
// list (wrapping ErrNotAllowed too), or that sets something the profile sets
// itself (the key's header, the nonce parameter, the signature, ...).
func (p *Profile) CheckCall(c *wire.Call) error {
	if !p.allows(c) {
		return fmt.Errorf("%w: %s %q", ErrNotAllowed, c.GetMethod(), c.Path)
	}
	for what, pl := range p.places() {
		name := pl.Name
		switch pl.In {
		case InQuery:
			if slices.ContainsFunc(c.Query, func(q wire.Param) bool { return q.Name == name }) {
				return fmt.Errorf("%w: query parameter %q is the profile's %s: leave it out", ErrCall, name, what)
			}
		case InHeader, InBearer:
			if pl.In == InBearer {
				name = "Authorization"
			}
			if slices.ContainsFunc(c.Header, func(h wire.Param) bool { return strings.EqualFold(h.Name, name) }) {
				return fmt.Errorf("%w: header %q is the profile's %s: leave it out", ErrCall, name, what)
			}
		case InForm:
			if c.Body != "" {
				form, err := url.ParseQuery(c.Body)
				if err != nil {
					return fmt.Errorf("%w: the profile puts its %s in a form body, and the body is not a form: %v", ErrCall, what, err)
				}
				if form.Has(name) {
					return fmt.Errorf("%w: form field %q is the profile's %s: leave it out", ErrCall, name, what)
				}
			}
		}
	}
	return nil
}

type validator struct {
	source   string
	doc      []byte // the YAML, when parsed from one: problems tell their line
	problems []string
}

// addf reports a problem of field, a path such as rate.rules[0].window, with
// the line it is on when the profile came from YAML.
func (v *validator) addf(field, format string, args ...any) {
	where := field
	if line := lineOf(v.doc, field); line > 0 {
		where = fmt.Sprintf("line %d: %s", line, field)
	}
	v.problems = append(v.problems, fmt.Sprintf("%s: %s", where, fmt.Sprintf(format, args...)))
}

// lineOf returns the line of field in the YAML doc, or 0 when it is not there
// (a field left out) or doc is empty.
func lineOf(doc []byte, field string) int {
	if len(doc) == 0 {
		return 0
	}
	path, err := yaml.PathString("$." + field)
	if err != nil {
		return 0
	}
	node, err := path.ReadNode(bytes.NewReader(doc))
	if err != nil || node == nil || node.GetToken() == nil {
		return 0
	}
	return node.GetToken().Position.Line
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w:\n  %s", v.source, ErrInvalid, strings.Join(v.problems, "\n  "))
}

func (v *validator) place(field string, p Place, bearer bool) {
	switch p.In {
	case InQuery, InForm:
		if p.Name == "" {
			v.addf(field+".name", "must name the %s field", p.In)
		}
	case InHeader:
		if !wire.ValidHeaderName(p.Name) || textproto.CanonicalMIMEHeaderKey(p.Name) == "Host" {
			v.addf(field+".name", "%q must be a header name, an RFC 7230 token (not Host)", p.Name)
		}
	case InBearer:
		if !bearer {
			v.addf(field+".in", "bearer is for the key only; use query, header or form")
		}
		if p.Name != "" {
			v.addf(field+".name", "must be empty with in: bearer (it is the Authorization header)")
		}
	default:
		v.addf(field+".in", "is %q; use query, header, form or (for the key) bearer", p.In)
	}
}

// reserved reports two values placed under one name.
func (v *validator) reserved(p *Profile) {
	seen := map[string]string{}
	for what, pl := range p.places() {
		id := pl.In + ":" + strings.ToLower(pl.Name)
		if pl.In == InBearer {
			id = InHeader + ":authorization"
		}
		if other, ok := seen[id]; ok {
			a, b := min(what, other), max(what, other)
			v.addf(b, "goes to the same place (%s %q) as %s; give each its own", pl.In, pl.Name, a)
		}
		seen[id] = what
	}
}

// statusText names a status for messages.
func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return fmt.Sprintf("%d %s", code, t)
	}
	return fmt.Sprint(code)
}
