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
// does neither: it speaks HTTP/1.1 (with the standard library's framing), takes a
// connection for the whole of one request, writes the request and reads its
// answer from the sending goroutine, and follows no redirect. A request whose
// connection breaks counts as one whose outcome is unknown; it is never written
// again by this package. That goroutine also sees when the request's last byte
// left and when the answer's first byte came, with no hand-over between them.
//
// # Fencing to the last byte
//
// The send's Fence is asked before every write of the request's bytes, so the
// holder of a key's lease never writes a byte once its lease can no longer cover
// the request's arrival (see internal/lease): such a send fails with the class
// Fenced and nothing more of it leaves.
package upstream

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
	// Header holds the answer's headers the profile keeps (answers.keep_headers);
	// nil when it keeps none.
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
	prof    *profile.Profile
	host    string // the upstream's host[:port], as its URLs name it
	conns   *conns
	timeout time.Duration
	now     func() time.Time
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
// base_url is checked here again, as a flag may have replaced it. A send takes
// at most timeout (none when 0), and up to maxConns idle connections are kept
// for reuse.
func NewProfile(p *profile.Profile, timeout time.Duration, maxConns int, now func() time.Time) (*Client, error) {
	u, err := url.Parse(p.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream URL %q: want http://host:port or https://host:port", Redact(p.BaseURL))
	}
	if now == nil {
		now = time.Now
	}
	port := u.Port()
	var tlsConf *tls.Config
	if u.Scheme == "https" {
		tlsConf = &tls.Config{ServerName: u.Hostname()}
		if port == "" {
			port = "443"
		}
	} else if port == "" {
		port = "80"
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	return &Client{prof: p, host: u.Host, conns: newConns(addr, tlsConf, timeout, maxConns), timeout: timeout, now: now}, nil
}

// Profile returns the profile the client follows.
func (c *Client) Profile() *profile.Profile { return c.prof }

// Close releases idle connections.
func (c *Client) Close() { c.conns.closeIdle() }

// writeChunk is how much of a request is written between two looks at its Fence.
const writeChunk = 4 << 10

// max1xx is how many interim answers are read before the final one, as Go's own
// transport allows.
const max1xx = 5

// aLongTimeAgo is a deadline in the past: it wakes a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// Send makes one request. It writes the request at most once, on one connection,
// and only while call.Fence allows.
func (c *Client) Send(ctx context.Context, call Call) Answer {
	if err := ctx.Err(); err != nil {
		return c.failed(ctx, Answer{}, "send", err)
	}
	apiKey := call.APIKey
	if apiKey == "" {
		apiKey = call.Secret
	}
	built, err := c.prof.Build(call.Target, profile.Creds{APIKey: apiKey, Secret: call.Secret, Passphrase: call.Passphrase},
		profile.Send{Nonce: call.Nonce, RequestID: call.RequestID, Now: c.now()})
	if err != nil {
		return Answer{Class: ConnError, Msg: "build request: " + err.Error()}
	}
	if built.URL.Host != c.host {
		return Answer{Class: ConnError, Msg: fmt.Sprintf("build request: the call's host %q is not the upstream's", built.URL.Hostname())}
	}
	req := &http.Request{
		Method: built.Method, URL: built.URL, Host: built.URL.Host, Header: built.Header,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
	if built.Body != "" {
		req.Body, req.ContentLength = io.NopCloser(strings.NewReader(built.Body)), int64(len(built.Body))
	}
	gzipped := askGzip(req)

	var deadline time.Time // none
	if c.timeout > 0 {
		deadline = time.Now().Add(c.timeout)
	}
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	cn, err := c.conns.get(ctx)
	if err != nil {
		return c.failed(ctx, Answer{}, "connect", err)
	}
	rt := roundTrip{c: c, cn: cn, call: call, req: req}
	_ = cn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = cn.SetDeadline(aLongTimeAgo) })
	a, reuse := rt.run(ctx, gzipped)
	if stop() && reuse {
		c.conns.put(cn)
	} else {
		_ = cn.Close()
	}
	return a
}

// roundTrip is one send on the connection it holds alone: its bytes are written
// and its answer read by the sending goroutine, so nothing else can write them
// again, and the instants it reports are the ones it saw.
type roundTrip struct {
	c    *Client
	cn   *conn
	call Call
	req  *http.Request
}

// run writes the request and reads its answer; reuse says whether the
// connection is fit for another request.
func (rt *roundTrip) run(ctx context.Context, gzipped bool) (a Answer, reuse bool) {
	c, cn := rt.c, rt.cn
	cn.out.Reset()
	if err := rt.req.Write(&cn.out); err != nil {
		return Answer{Class: ConnError, Msg: "build request: " + scrub(err)}, true
	}
	for b := cn.out.Bytes(); len(b) > 0; {
		if rt.call.Fence != nil && !rt.call.Fence(c.now()) {
			a.Class, a.Msg = Fenced, errFenced.Error()
			if cn.out.Len() == len(b) {
				return a, true // nothing of it left: the connection is as it was
			}
			a.Wrote = c.now()
			return a, false
		}
		n, err := cn.Write(b[:min(len(b), writeChunk)])
		b = b[n:]
		if err != nil {
			if cn.out.Len() != len(b) {
				a.Wrote = c.now() // some of it left: it may have arrived
			}
			return c.failed(ctx, a, "send", err), false
		}
	}
	a.Wrote = c.now()
	if rt.call.Wrote != nil {
		rt.call.Wrote(a.Wrote)
	}

	// The answer came back when its first byte was read, not once it is read in
	// full: a slow body must not widen the request's bound.
	if _, err := cn.br.Peek(1); err != nil {
		return c.failed(ctx, a, "read answer", err), false
	}
	first := c.now()
	resp, interim, err := readFinal(cn.br, rt.req)
	if err != nil {
		return c.failed(ctx, a, "read answer", err), false
	}
	var body io.Reader = resp.Body
	if gzipped && strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return c.failed(ctx, a, "read answer", err), false
		}
		body = zr
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
	}
	limit := c.prof.MaxBody()
	raw, err := io.ReadAll(io.LimitReader(body, int64(limit)+1))
	a.Answered = first
	if interim {
		// An interim answer (103, say) may come from something in between
		// before the upstream has the request: its byte proves nothing.
		a.Answered = c.now()
	}
	a.Status = resp.StatusCode
	if err != nil {
		a.Class, a.Msg = ConnError, "read answer: "+scrub(err)
		return a, false
	}
	if len(raw) > limit {
		raw, a.Truncated = raw[:limit], true
	}
	a.Body = raw
	a.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), a.Answered)
	for _, h := range c.prof.Answers.KeepHeaders {
		if v := resp.Header.Values(h); len(v) > 0 {
			if a.Header == nil {
				a.Header = http.Header{}
			}
			a.Header[http.CanonicalHeaderKey(h)] = v
		}
	}
	a.Usage = c.prof.ReadUsage(resp.Header)
	a.Class, a.Msg = c.classify(resp, raw)
	return a, !a.Truncated && !resp.Close
}

// readFinal reads answers until the final one, and reports whether an interim
// (1xx) answer came first.
func readFinal(br *bufio.Reader, req *http.Request) (*http.Response, bool, error) {
	for i := 0; ; i++ {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, i > 0, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, i > 0, nil
		}
		if i == max1xx {
			return nil, true, fmt.Errorf("more than %d interim answers", max1xx)
		}
	}
}

// askGzip asks for a compressed answer, as Go's own transport does, where the
// request says nothing of encodings; it reports whether it did.
func askGzip(req *http.Request) bool {
	if req.Method == http.MethodHead || req.Header.Get("Accept-Encoding") != "" || req.Header.Get("Range") != "" {
		return false
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Accept-Encoding", "gzip")
	return true
}

// failed completes a that failed in step with err: as a timeout when its time
// ran out, or as a broken connection.
func (c *Client) failed(ctx context.Context, a Answer, step string, err error) Answer {
	a.Class = ConnError
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		err = ctx.Err()
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		a.Class = Timeout
	}
	a.Msg = step + ": " + scrub(err)
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

// errFenced is the message of a request its Fence stopped.
var errFenced = errors.New("request not written: the lease could no longer cover its arrival")
