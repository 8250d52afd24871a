// Package upstream sends one request to the rate-limited HTTP API and classifies
// the answer. It never puts a key's secret in an error or a log line.
package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Class is what an answer means for the request and the key.
type Class int

// The answer classes. Each is handled in one place by the worker.
const (
	OK          Class = iota // 200: done
	RateLimited              // 429 exceeded rate limit: the limiter's model was wrong
	BadNonce                 // 400 invalid nonce: move the nonce on and retry
	KeyUnusable              // 401, or 429 blocked: the key is dead
	ServerError              // 5xx or an unexpected answer: retry with backoff
	Timeout                  // no answer in time
	ConnError                // the request could not be sent or the connection broke
)

var classNames = [...]string{"ok", "rate_limited", "bad_nonce", "key_unusable", "server_error", "timeout", "conn_error"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// Answer is the outcome of one send.
type Answer struct {
	Class  Class
	Status int    // HTTP status, 0 when none came back
	Msg    string // the upstream's error message, or the transport error
	// RetryAfter is the upstream's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Wrote is when the request finished leaving; zero if it never left.
	Wrote time.Time
	// Answered is when the answer came back; zero if none did.
	Answered time.Time
}

// Unknown reports whether the upstream may have processed the request although no
// answer came back.
func (a Answer) Unknown() bool {
	return a.Answered.IsZero() && !a.Wrote.IsZero()
}

// Client sends requests to one upstream.
type Client struct {
	base *url.URL
	http *http.Client
	now  func() time.Time
}

// New returns a client for the API at baseURL (such as http://127.0.0.1:8080),
// with a per-attempt timeout and room for maxConns parallel connections.
func New(baseURL string, timeout time.Duration, maxConns int, now func() time.Time) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream URL %q: want http://host:port", baseURL)
	}
	if now == nil {
		now = time.Now
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{base: u.JoinPath("api", "request"), http: &http.Client{Transport: tr, Timeout: timeout}, now: now}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

type body struct {
	Status   string `json:"status"`
	ErrorMsg string `json:"error_msg"`
	ReqID    string `json:"req_id"`
}

// Send makes one request with the given secret, nonce and request id. wrote, if
// not nil, is called once the request has left, with the time it finished leaving.
func (c *Client) Send(ctx context.Context, secret string, nonce int64, reqID string, wrote func(time.Time)) Answer {
	var (
		a       Answer
		mu      sync.Mutex // the trace runs on the transport's goroutine
		wroteAt time.Time
	)
	leftAt := func() time.Time { mu.Lock(); defer mu.Unlock(); return wroteAt }
	u := *c.base
	u.RawQuery = url.Values{"api_key": {secret}, "nonce": {strconv.FormatInt(nonce, 10)}, "req_id": {reqID}}.Encode()
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
		t := c.now()
		mu.Lock()
		wroteAt = t
		mu.Unlock()
		if wrote != nil {
			wrote(t)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, u.String(), nil)
	if err != nil {
		return Answer{Class: ConnError, Msg: "build request: " + scrub(err)}
	}
	resp, err := c.http.Do(req)
	a.Wrote = leftAt()
	if err != nil {
		a.Msg = scrub(err)
		a.Class = ConnError
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			a.Class = Timeout
		}
		return a
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	a.Answered = c.now()
	a.Status = resp.StatusCode
	if err != nil {
		a.Class, a.Msg = ConnError, "read answer: "+scrub(err)
		return a
	}
	var b body
	_ = json.Unmarshal(raw, &b) // an undecodable body is classified by status alone
	a.Msg = b.ErrorMsg
	a.Class = classify(resp.StatusCode, b)
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.Atoi(s); err == nil && secs > 0 {
			a.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	if a.Class == ServerError && a.Msg == "" {
		a.Msg = http.StatusText(resp.StatusCode)
	}
	return a
}

func classify(status int, b body) Class {
	switch {
	case status == http.StatusOK && b.Status == "OK":
		return OK
	case status == http.StatusTooManyRequests && strings.Contains(b.ErrorMsg, "blocked"):
		return KeyUnusable
	case status == http.StatusTooManyRequests:
		return RateLimited
	case status == http.StatusBadRequest && strings.Contains(b.ErrorMsg, "nonce"):
		return BadNonce
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return KeyUnusable
	}
	return ServerError
}

// scrub returns the error's text without the request URL, which holds the secret.
func scrub(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
