// Package upstream sends one request to the rate-limited HTTP API and classifies
// the answer, both as the upstream's profile says (internal/profile): the call is
// built there (the key, the nonce, the signature placed), and the answer's class,
// its chosen headers and its body up to a limit come back. It never puts a key's
// secret in an error or a log line.
//
// # Every arrival counted
//
// The limiter counts one arrival per send, so a request must reach the upstream at
// most once per send. Go's HTTP transport may silently write a request a second
// time (a GET on a reused keep-alive connection that closed before the first
// answer byte), and a client that follows redirects sends it again. This client
// follows no redirect, speaks HTTP/1.1 only (one request per connection at a time),
// and wraps every connection so that a request whose bytes already went out on one
// connection can never be written on another: the transport's re-send fails
// instead, and the send counts as one request whose outcome is unknown.
//
// # Fencing to the last byte
//
// The same wrapper asks the send's Fence before every write of the request's
// bytes, so the holder of a key's lease never writes a byte once its lease can no
// longer cover the request's arrival (see internal/lease): such a send fails with
// the class Fenced and nothing more of it leaves.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/wire"
)

// Class is what an answer means for the request and the key.
type Class int

// The answer classes. The worker handles each in one table (outcome.go).
const (
	OK          Class = iota // 200: done
	RateLimited              // 429 exceeded rate limit: the limiter's model was wrong
	BadNonce                 // 400 invalid nonce: an inversion; move the nonce on and retry
	KeyUnusable              // 401, or 429 blocked: the key is dead
	ServerError              // the upstream's own error answer (5xx in its format): retry with backoff
	Gateway                  // an answer not in the upstream's format (a proxy's 502/503/504, a redirect): it may not have arrived yet
	Timeout                  // no answer in time
	ConnError                // the request could not be sent or the connection broke
	Fenced                   // not sent (or not finished): the lease could no longer cover its arrival
)

var classNames = [...]string{"ok", "rate_limited", "bad_nonce", "key_unusable", "server_error", "gateway_error", "timeout", "conn_error", "fenced"}

func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// Arrived reports whether an answer of this class proves that the request reached
// the upstream by the time the answer came back: the upstream's own answers do; a
// gateway's, a timeout or a broken connection do not.
func (c Class) Arrived() bool {
	switch c {
	case OK, RateLimited, BadNonce, KeyUnusable, ServerError:
		return true
	}
	return false
}

// Answer is the outcome of one send.
type Answer struct {
	Class  Class
	Status int    // HTTP status, 0 when none came back
	Msg    string // the upstream's error message, or the transport error
	// RetryAfter is the upstream's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Wrote is when the request finished leaving; zero if it never did.
	Wrote time.Time
	// Answered is when an answer came back; zero if none did. Whether it proves
	// the request's arrival is Class.Arrived.
	Answered time.Time
	// Header holds the answer's headers the profile keeps (answers.keep_headers).
	Header http.Header
	// Usage is what the answer's usage headers (the profile's usage) report.
	Usage []profile.Usage
	// Body is the answer's body, up to the profile's answers.max_body bytes;
	// Truncated says whether more came.
	Body      []byte
	Truncated bool
}

// Unknown reports whether the upstream may have processed the request although no
// answer of its own came back.
func (a Answer) Unknown() bool {
	return !a.Class.Arrived() && !a.Wrote.IsZero()
}

// Call is one request to send.
type Call struct {
	// Secret is the key's secret: it signs, or, where the key has no id
	// (APIKey empty), it is the API key sent.
	Secret string
	// APIKey is the key's public id, sent where the profile places the key;
	// Secret when empty.
	APIKey string
	// Passphrase is the key's passphrase, if it has one.
	Passphrase string
	// Target is the request's call; nil makes the profile's default call.
	Target *wire.Call
	// Nonce is the key's next nonce.
	Nonce int64
	// RequestID names the request to the upstream.
	RequestID string
	// Fence reports whether a byte of the request may still be written at t; the
	// request fails with the class Fenced once it says no. Nil allows every write.
	Fence func(t time.Time) bool
	// Wrote, if not nil, is called once the request has finished leaving, with the
	// time it did.
	Wrote func(t time.Time)
}

// Client sends requests to one upstream.
type Client struct {
	prof *profile.Profile
	http *http.Client
	now  func() time.Time
}

// New returns a client for the reference exchange at baseURL (such as
// http://127.0.0.1:8080), with a per-attempt timeout and room for maxConns
// parallel connections.
func New(baseURL string, timeout time.Duration, maxConns int, now func() time.Time) (*Client, error) {
	p := *profile.Reference()
	p.BaseURL = baseURL
	return NewProfile(&p, timeout, maxConns, now)
}

// NewProfile returns a client for the upstream p describes; a profile's
// base_url is checked here again, as a flag may have replaced it.
func NewProfile(p *profile.Profile, timeout time.Duration, maxConns int, now func() time.Time) (*Client, error) {
	u, err := url.Parse(p.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream URL %q: want http://host:port or https://host:port", Redact(p.BaseURL))
	}
	if now == nil {
		now = time.Now
	}
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &fencedConn{Conn: c, now: now}, nil
		},
		// HTTP/1.1 only: the fence is bound to a connection for the whole of one
		// request, which HTTP/2's shared connections would break.
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
	}
	hc := &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// A redirect would send the request (and the key) once more, uncounted.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Client{prof: p, http: hc, now: now}, nil
}

// Profile returns the profile the client follows.
func (c *Client) Profile() *profile.Profile { return c.prof }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Send makes one request. It writes the request at most once, on one connection,
// and only while call.Fence allows.
func (c *Client) Send(ctx context.Context, call Call) Answer {
	apiKey := call.APIKey
	if apiKey == "" {
		apiKey = call.Secret
	}
	built, err := c.prof.Build(call.Target, profile.Creds{APIKey: apiKey, Secret: call.Secret, Passphrase: call.Passphrase},
		profile.Send{Nonce: call.Nonce, RequestID: call.RequestID, Now: c.now()})
	if err != nil {
		return Answer{Class: ConnError, Msg: "build request: " + err.Error()}
	}
	f := &sendFence{allow: call.Fence, now: c.now, wrote: call.Wrote, base: c.now()}
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { f.bind(info.Conn) },
		// The transport reports the request written once it is in its buffer,
		// before the buffer is flushed: the flush that follows is the last byte.
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				f.buffered.Store(true)
			}
		},
		// The answer came back when its first byte was read, not once the
		// caller's goroutine has run and read it all: on a busy machine that
		// can be milliseconds later, and each of them would widen the
		// request's bound.
		GotFirstResponseByte: func() { f.firstByte.CompareAndSwap(0, f.offset(c.now())) },
		// An interim answer (103, say) may come from something in between
		// before the upstream has the request: its byte proves nothing.
		Got1xxResponse: func(int, textproto.MIMEHeader) error {
			f.interim.Store(true)
			return nil
		},
	}
	var body io.Reader
	if built.Body != "" {
		body = strings.NewReader(built.Body)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), built.Method, built.URL.String(), body)
	if err != nil {
		return Answer{Class: ConnError, Msg: "build request: " + scrub(err)}
	}
	req.Header = built.Header
	resp, err := c.http.Do(req)
	f.settle(c.now())
	a := Answer{Wrote: f.wroteAt()}
	if err != nil {
		a.Msg = scrub(err)
		a.Class = ConnError
		var ne net.Error
		switch {
		case f.fenced.Load():
			a.Class = Fenced
		case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
			a.Class = Timeout
		}
		return a
	}
	defer resp.Body.Close()
	limit := c.prof.MaxBody()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	a.Answered = f.answeredAt(c.now())
	a.Status = resp.StatusCode
	if err != nil {
		a.Class, a.Msg = ConnError, "read answer: "+scrub(err)
		return a
	}
	if len(raw) > limit {
		raw, a.Truncated = raw[:limit], true
	}
	a.Body = raw
	a.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), a.Answered)
	a.Header = http.Header{}
	for _, h := range c.prof.Answers.KeepHeaders {
		if v := resp.Header.Values(h); len(v) > 0 {
			a.Header[http.CanonicalHeaderKey(h)] = v
		}
	}
	a.Usage = c.prof.ReadUsage(resp.Header)
	a.Class, a.Msg = c.classify(resp, raw)
	return a
}

// retryAfter reads a Retry-After header: whole seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return max(time.Duration(secs)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// classify reads an answer as the profile says. Only an answer in the upstream's
// own format proves that the request arrived; anything else may come from
// something in between that has not passed it on yet.
func (c *Client) classify(resp *http.Response, raw []byte) (Class, string) {
	class, msg := c.prof.Classify(resp.StatusCode, raw)
	switch class {
	case profile.Done:
		return OK, ""
	case profile.RateLimited:
		return RateLimited, msg
	case profile.BadNonce:
		return BadNonce, msg
	case profile.KeyUnusable:
		return KeyUnusable, msg
	case profile.Gateway:
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return Gateway, fmt.Sprintf("upstream answered %d with a redirect to %s; redirects are not followed: point --upstream at the final address",
				resp.StatusCode, Redact(resp.Header.Get("Location")))
		}
		return Gateway, msg
	}
	return ServerError, msgOr(msg, resp.StatusCode)
}

func msgOr(msg string, status int) string {
	if msg != "" {
		return msg
	}
	return http.StatusText(status)
}

// scrub returns the error's text without the request URL, which holds the secret.
func scrub(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// Redact returns raw without its user info and query, which may hold secrets; an
// unparsable raw comes back as "(unparsable URL)".
func Redact(raw string) string {
	if raw == "" {
		return `""`
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	return u.String()
}

// What a connection's Write returns for a request it must not write.
var (
	errFenced = errors.New("request not written: the lease could no longer cover its arrival")
	errResend = errors.New("request not written again: it already went out on another connection")
)

// sendFence is one send's right to write: on the first connection it got, while
// its Fence allows. It also tells when the request's last byte left.
type sendFence struct {
	// Set once.
	allow func(time.Time) bool
	now   func() time.Time
	wrote func(time.Time)
	// base is when the send began; the instants below are kept as offsets from
	// it, so the times rebuilt from them keep its monotonic reading and a
	// wall-clock step moves none of them.
	base time.Time

	conns     atomic.Int32 // connections the transport gave this send
	started   atomic.Bool  // a byte of the request went out
	buffered  atomic.Bool  // the transport has the whole request in its buffer
	fenced    atomic.Bool  // Fence refused a write
	lastByte  atomic.Int64 // offset of the latest write (see at), 0 before
	left      atomic.Int64 // offset when the request finished leaving, 0 until then
	firstByte atomic.Int64 // offset when the answer's first byte was read, 0 until then
	interim   atomic.Bool  // an interim (1xx) answer came first
}

// bind attaches the send to the connection the transport chose for it. A second
// connection means the transport is re-sending: allowed only if nothing of the
// request went out on the first.
func (f *sendFence) bind(c net.Conn) {
	fc := unwrap(c)
	if fc == nil {
		return
	}
	n := f.conns.Add(1)
	fc.bound.Store(&binding{send: f, resend: n > 1 && f.started.Load()})
}

// check reports whether the bound send may write at t.
func (f *sendFence) check(b *binding, t time.Time) error {
	if b.resend {
		return errResend
	}
	if f.allow != nil && !f.allow(t) {
		f.fenced.Store(true)
		return errFenced
	}
	f.started.Store(true)
	return nil
}

// written notes a write that ended at t; the first after the request was buffered
// is the flush of its last bytes.
func (f *sendFence) written(t time.Time) {
	f.lastByte.Store(f.offset(t))
	if f.buffered.Load() {
		f.finish(f.offset(t))
	}
}

// settle reports, once the round trip is over at end, a request that began to
// leave as left, if that was not reported yet: at its last write if no write
// followed the transport's buffering (its bytes had already gone out), or at end
// when the write has not been seen to return yet (the answer may come back before
// the writing goroutine runs again; the request surely left before its answer).
func (f *sendFence) settle(end time.Time) {
	if !f.started.Load() {
		return
	}
	ns := f.lastByte.Load()
	if ns == 0 || !f.buffered.Load() {
		ns = f.offset(end)
	}
	f.finish(ns)
}

func (f *sendFence) finish(ns int64) {
	if f.left.CompareAndSwap(0, ns) && f.wrote != nil {
		f.wrote(f.at(ns))
	}
}

// answeredAt returns when the answer came back, read in full at end: when its
// first byte was read, unless an interim answer came first, and never before the
// request finished leaving (the goroutine that wrote it may note that after the
// answer is read).
func (f *sendFence) answeredAt(end time.Time) time.Time {
	ns := f.firstByte.Load()
	if ns == 0 || f.interim.Load() {
		return end
	}
	return f.at(max(ns, f.left.Load()))
}

func (f *sendFence) wroteAt() time.Time {
	if ns := f.left.Load(); ns != 0 {
		return f.at(ns)
	}
	return time.Time{}
}

// offset returns t as kept in the atomics: nanoseconds after base, plus one so
// that no instant is 0 (which means "none"). An instant before base is base.
func (f *sendFence) offset(t time.Time) int64 { return int64(max(t.Sub(f.base), 0)) + 1 }

// at is the instant offset ns stands for, on base's clock.
func (f *sendFence) at(ns int64) time.Time { return f.base.Add(time.Duration(ns - 1)) }

// binding is a connection's current send.
type binding struct {
	send   *sendFence
	resend bool // the transport re-sends a request already written elsewhere
}

// fencedConn asks the send bound to it before every write.
type fencedConn struct {
	net.Conn
	now   func() time.Time
	bound atomic.Pointer[binding]
}

// Write writes p if the bound send may still write; bytes written before any send
// is bound (a TLS handshake) are not a request's.
func (c *fencedConn) Write(p []byte) (int, error) {
	b := c.bound.Load()
	if b == nil {
		return c.Conn.Write(p)
	}
	if err := b.send.check(b, c.now()); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if n > 0 {
		b.send.written(c.now())
	}
	return n, err
}

// unwrap finds the fencedConn under c (a TLS connection wraps it).
func unwrap(c net.Conn) *fencedConn {
	for c != nil {
		switch v := c.(type) {
		case *fencedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
