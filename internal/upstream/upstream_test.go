package upstream_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/upstream"
)

func startExchange(t *testing.T, mutate func(*exchange.Config)) *exchange.Server {
	t.Helper()
	cfg := exchange.DefaultConfig()
	cfg.InDelay, cfg.OutDelay = exchange.DelayRange{}, exchange.DelayRange{}
	cfg.Limit = 2
	cfg.BlockAfter = 3
	if mutate != nil {
		mutate(&cfg)
	}
	ex, err := exchange.New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, ex.Open("127.0.0.1:0"))
	t.Cleanup(func() { _ = ex.Close(context.Background()) })
	return ex
}

// newClient returns a client of the reference profile for the upstream at url,
// closed when the test ends.
func newClient(t *testing.T, url string, timeout time.Duration) *upstream.Client {
	t.Helper()
	c, err := upstream.New(url, timeout, 4, nil)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func TestClient_ClassifiesEachAnswer(t *testing.T) {
	ex := startExchange(t, nil)
	c := newClient(t, ex.URL(), 2*time.Second)
	key := exchange.DefaultKeys()[0].Secret()
	ctx := context.Background()

	wrote := false
	a := c.Send(ctx, upstream.Call{Secret: key, Nonce: 10, RequestID: "r1", Wrote: func(time.Time) { wrote = true }})
	require.Equal(t, upstream.OK, a.Class, a.Msg)
	require.True(t, wrote)
	require.False(t, a.Wrote.After(a.Answered))
	require.False(t, a.Unknown())

	a = c.Send(ctx, upstream.Call{Secret: key, Nonce: 5, RequestID: "r2"})
	require.Equal(t, upstream.BadNonce, a.Class)
	require.Equal(t, 400, a.Status)

	// The ring of 2 is full now: the next ones within the window are rate-limited,
	// and the third rejection blocks the key.
	for range 3 {
		a = c.Send(ctx, upstream.Call{Secret: key, Nonce: 20, RequestID: "r3"})
		require.Equal(t, upstream.RateLimited, a.Class)
	}
	a = c.Send(ctx, upstream.Call{Secret: key, Nonce: 21, RequestID: "r4"})
	require.Equal(t, upstream.KeyUnusable, a.Class, "blocked")
	require.Equal(t, 429, a.Status)

	a = c.Send(ctx, upstream.Call{Secret: "not-a-key", Nonce: 1, RequestID: "r5"})
	require.Equal(t, upstream.KeyUnusable, a.Class)
	require.Equal(t, 401, a.Status)

	require.NoError(t, ex.SetFaults(exchange.Faults{ErrorRate: 1, ErrorStatus: 502}))
	a = c.Send(ctx, upstream.Call{Secret: exchange.DefaultKeys()[1].Secret(), Nonce: 1, RequestID: "r6"})
	require.Equal(t, upstream.ServerError, a.Class)
	require.Equal(t, 502, a.Status)
}

func TestClient_TimeoutIsAnUnknownOutcomeAndNeverShowsTheKey(t *testing.T) {
	ex := startExchange(t, func(c *exchange.Config) { c.OutDelay = exchange.DelayRange{Min: time.Second, Max: time.Second} })
	c := newClient(t, ex.URL(), 100*time.Millisecond)
	secret := exchange.DefaultKeys()[0].Secret()
	a := c.Send(context.Background(), upstream.Call{Secret: secret, Nonce: 1, RequestID: "slow"})
	require.Equal(t, upstream.Timeout, a.Class)
	require.True(t, a.Unknown(), "the request left; no answer came back")
	require.NotContains(t, a.Msg, secret)
}

func TestClient_ConnectionRefused(t *testing.T) {
	c, err := upstream.New("http://127.0.0.1:1", time.Second, 1, nil)
	require.NoError(t, err)
	secret := exchange.DefaultKeys()[0].Secret()
	a := c.Send(context.Background(), upstream.Call{Secret: secret, Nonce: 1, RequestID: "x"})
	require.Equal(t, upstream.ConnError, a.Class)
	require.False(t, a.Unknown(), "nothing left")
	require.NotContains(t, a.Msg, secret)
}

func TestNew_RejectsABadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
		_, err := upstream.New(u, time.Second, 1, nil)
		require.Error(t, err, u)
	}
}

// answerFirstOnly answers the first request on a connection with a kept-alive
// 200, and hangs up on the next once it has read it, without a byte of answer.
func answerFirstOnly(w io.Writer, i int) bool {
	if i > 0 {
		return false
	}
	body := `{"status":"OK","req_id":"x"}`
	_, _ = fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return true
}

func TestClient_NeverWritesARequestTwiceWhenAKeptAliveConnectionDrops(t *testing.T) {
	// Go's own transport writes the dropped request a second time on a new
	// connection: the hazard this client guards against.
	stock := startAnswerServer(t, answerFirstOnly)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	for range 2 {
		if resp, err := hc.Get(stock.url + "/api/request"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}
	require.EqualValues(t, 3, stock.reads.Load(), "the stock transport re-sends the dropped request")

	srv := startAnswerServer(t, answerFirstOnly)
	c := newClient(t, srv.url, 2*time.Second)
	wrote := 0
	a := c.Send(context.Background(), upstream.Call{Secret: "k", Nonce: 1, RequestID: "first", Wrote: func(time.Time) { wrote++ }})
	require.Equal(t, upstream.OK, a.Class, a.Msg)
	a = c.Send(context.Background(), upstream.Call{Secret: "k", Nonce: 2, RequestID: "second", Wrote: func(time.Time) { wrote++ }})
	require.Equal(t, upstream.ConnError, a.Class, a.Msg)
	require.True(t, a.Unknown(), "the dropped request left: its outcome is unknown")
	require.EqualValues(t, 2, srv.reads.Load(), "each request reached the server once")
	require.Equal(t, 2, wrote, "one write reported per request")
}

func TestClient_NeverFollowsARedirect(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "/moved?"+r.URL.RawQuery, http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, 2*time.Second)
	a := c.Send(context.Background(), upstream.Call{Secret: "s3cr3t-key", Nonce: 1, RequestID: "r"})
	require.Equal(t, upstream.Gateway, a.Class)
	require.Equal(t, http.StatusFound, a.Status)
	require.EqualValues(t, 1, hits.Load(), "the redirect was not followed")
	require.Contains(t, a.Msg, "redirect")
	require.NotContains(t, a.Msg, "s3cr3t-key")
	require.True(t, a.Unknown(), "a redirect does not prove the upstream took the request")
}

func TestClient_OnlyTheUpstreamsOwnAnswerProvesArrival(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		body        string
		want        upstream.Class
		wantArrived bool
	}{
		{"a proxy's 502 page", 502, "<html>Bad Gateway</html>", upstream.Gateway, false},
		{"a proxy's 504 without a body", 504, "", upstream.Gateway, false},
		{"a 200 that is not JSON", 200, "OK", upstream.Gateway, false},
		{"the upstream's own 503", 503, `{"status":"error","error_msg":"maintenance"}`, upstream.ServerError, true},
		{"the upstream's own 200", 200, `{"status":"OK","req_id":"r"}`, upstream.OK, true},
		{"a 429 from anything is a rate limit", 429, "slow down", upstream.RateLimited, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			c := newClient(t, srv.URL, 2*time.Second)
			a := c.Send(context.Background(), upstream.Call{Secret: "k", Nonce: 1, RequestID: "r"})
			require.Equal(t, tt.want, a.Class, a.Msg)
			require.Equal(t, tt.wantArrived, a.Class.Arrived())
			require.Equal(t, !tt.wantArrived, a.Unknown())
		})
	}
}

func TestClient_AFenceThatSaysNoStopsTheRequestBeforeAByteLeaves(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{"status":"OK"}`)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, 2*time.Second)

	// Over a connection kept alive by a first request, then over a fresh one.
	a := c.Send(context.Background(), upstream.Call{Secret: "k", Nonce: 1, RequestID: "r1", Fence: func(time.Time) bool { return true }})
	require.Equal(t, upstream.OK, a.Class, a.Msg)
	for _, name := range []string{"reused connection", "new connection"} {
		if name == "new connection" {
			c.Close()
		}
		a = c.Send(context.Background(), upstream.Call{Secret: "k", Nonce: 2, RequestID: "r2", Fence: func(time.Time) bool { return false }})
		require.Equal(t, upstream.Fenced, a.Class, "%s: %s", name, a.Msg)
		require.True(t, a.Wrote.IsZero(), name)
		require.False(t, a.Unknown(), "%s: nothing left", name)
	}
	require.EqualValues(t, 1, hits.Load(), "only the first request reached the server")
}

func TestRedact_DropsUserInfoAndQuery(t *testing.T) {
	require.Equal(t, "http://host:8080/p?…", upstream.Redact("http://alice:pw@host:8080/p?api_key=secret"))
	require.NotContains(t, upstream.Redact("https://u:p@h/x?k=v"), "p@")
}

func TestClient_WroteAndAnsweredKeepTheMonotonicClock(t *testing.T) {
	// The limiter compares these instants with time.Now: a time rebuilt from
	// wall-clock nanoseconds would drop the monotonic reading, and a wall-clock
	// step would then move a bound. time.Time.String shows the reading as "m=".
	ex := startExchange(t, nil)
	c := newClient(t, ex.URL(), 2*time.Second)
	var reported time.Time
	a := c.Send(context.Background(), upstream.Call{
		Secret: exchange.DefaultKeys()[0].Secret(), Nonce: 1, RequestID: "mono",
		Wrote: func(at time.Time) { reported = at },
	})
	require.Equal(t, upstream.OK, a.Class, a.Msg)
	for name, at := range map[string]time.Time{"reported": reported, "wrote": a.Wrote, "answered": a.Answered} {
		require.False(t, at.IsZero(), name)
		require.Contains(t, at.String(), " m=", "%s (%s) lost the monotonic reading", name, at)
	}
	require.Equal(t, reported, a.Wrote)
	require.False(t, a.Wrote.After(a.Answered))
}

// TestClient_ReadsTheProfilesUsageHeaders: an upstream reporting its rules'
// usage (Binance's used weight, OpenAI's remaining requests) is read as the
// profile's usage section says, another client's calls included.
func TestClient_ReadsTheProfilesUsageHeaders(t *testing.T) {
	ex := startExchange(t, func(c *exchange.Config) {
		c.Limit = 0
		c.Rules = []exchange.Rule{{Kind: exchange.Sliding, Limit: 20, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerKey}}
		c.UsageHeaders = []exchange.HeaderStyle{exchange.BinanceHeaders, exchange.OpenAIHeaders}
	})
	p := *profile.Reference()
	p.BaseURL = ex.URL()
	p.Usage = []profile.UsageHeader{{Header: "x-ratelimit-remaining-requests", Rule: 0, Reports: profile.ReportsRemaining}}
	c, err := upstream.NewProfile(&p, 2*time.Second, 4, nil)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	key := exchange.DefaultKeys()[0].Secret()
	for i := range 3 {
		a := c.Send(context.Background(), upstream.Call{Secret: key, Nonce: int64(i + 1), RequestID: fmt.Sprint("r", i)})
		require.Equal(t, upstream.OK, a.Class, a.Msg)
		require.Equal(t, []profile.Usage{{Rule: limiter.DefaultRule, Used: i + 1}}, a.Usage, "send %d", i)
		require.Empty(t, a.Header.Get("x-ratelimit-remaining-requests"), "a usage header is read, not kept unless keep_headers says")
	}
}

// TestClient_AnswerIsTimedAtItsFirstByte: an answer came back when its first
// byte was read, however long its body takes (the bound a busy machine gives
// its request is no later than it must be); an interim answer (103) proves
// nothing, so the answer's time is then when it was read in full.
func TestClient_AnswerIsTimedAtItsFirstByte(t *testing.T) {
	const hold = time.Second // long beside what a loaded machine adds to a loopback round trip
	for _, tc := range []struct {
		name    string
		serve   func(http.ResponseWriter)
		atFirst bool
	}{
		{"a slow body", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"ok":`))
			w.(http.Flusher).Flush()
			time.Sleep(hold)
			_, _ = w.Write([]byte(`true}`))
		}, true},
		{"an interim answer first", func(w http.ResponseWriter) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			time.Sleep(hold)
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"ok":true}`))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { tc.serve(w) }))
			t.Cleanup(srv.Close)
			c := newClient(t, srv.URL, 5*time.Second)
			start := time.Now()
			a := c.Send(context.Background(), upstream.Call{Secret: "s", Nonce: 1, RequestID: "r"})
			end := time.Now()
			require.Equal(t, http.StatusOK, a.Status, a.Msg)
			require.GreaterOrEqual(t, end.Sub(start), hold)
			require.False(t, a.Answered.Before(a.Wrote))
			if tc.atFirst {
				require.Less(t, a.Answered.Sub(a.Wrote), hold/2, "timed when the body was read in full")
			} else {
				require.GreaterOrEqual(t, a.Answered.Sub(a.Wrote), hold, "timed at the interim answer")
			}
		})
	}
}

// countConns starts a server of h, which closes a connection idle for idle, and
// counts the connections it accepts.
func countConns(t *testing.T, idle time.Duration, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.IdleTimeout = idle
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n
}

// answerServer answers HTTP/1.1 by hand on loopback: the i-th request read on a
// connection (from 0) gets what answer writes, and the connection is closed
// when answer returns false. It counts the connections and the requests.
type answerServer struct {
	url          string
	conns, reads atomic.Int32
}

func startAnswerServer(t *testing.T, answer func(w io.Writer, i int) bool) *answerServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	s := &answerServer{url: "http://" + ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					s.reads.Add(1)
					if !answer(c, i) {
						return
					}
				}
			}()
		}
	}()
	return s
}

// TestClient_ReusesAConnectionOnlyWhenItsAnswerWasReadInFull: a kept-alive
// connection carries the next request; one whose answer was cut at max_body
// (the rest of it still to come), that brought more than its answer, or whose
// upstream said it closes it, does not.
func TestClient_ReusesAConnectionOnlyWhenItsAnswerWasReadInFull(t *testing.T) {
	const maxBody = 1024
	long := `{"status":"OK","pad":"` + strings.Repeat("x", 2*maxBody) + `"}`
	tests := []struct {
		name      string
		answer    func(w io.Writer)
		wantConns int32
	}{
		{"a whole answer", func(w io.Writer) {
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}")
		}, 1},
		{"an answer cut at max_body, the rest of it still on its way", func(w io.Writer) {
			_, _ = fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(long), long[:maxBody+1])
			time.Sleep(200 * time.Millisecond)
			_, _ = io.WriteString(w, long[maxBody+1:])
		}, 3},
		{"an answer followed by one nobody asked for", func(w io.Writer) {
			_, _ = io.WriteString(w, strings.Repeat("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}", 2))
		}, 3},
		{"an answer that says the connection closes", func(w io.Writer) {
			_, _ = io.WriteString(w, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}")
		}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startAnswerServer(t, func(w io.Writer, _ int) bool { tt.answer(w); return true })
			p := *profile.Reference()
			p.BaseURL = srv.url
			p.Answers.MaxBody = maxBody
			c, err := upstream.NewProfile(&p, 2*time.Second, 4, nil)
			require.NoError(t, err)
			t.Cleanup(c.Close)
			for i := range 3 {
				a := c.Send(context.Background(), upstream.Call{Secret: "k", Nonce: int64(i + 1), RequestID: "r"})
				require.Equal(t, http.StatusOK, a.Status, "send %d: %s", i, a.Msg)
			}
			require.Equal(t, tt.wantConns, srv.conns.Load())
		})
	}
}

// TestClient_NeverSendsOverAConnectionTheUpstreamClosedWhileIdle: an upstream
// that closes idle connections (its keep-alive timeout) costs a new connection,
// not a request whose outcome is unknown.
func TestClient_NeverSendsOverAConnectionTheUpstreamClosedWhileIdle(t *testing.T) {
	srv, conns := countConns(t, 20*time.Millisecond, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"OK"}`)
	})
	c := newClient(t, srv.URL, 2*time.Second)
	for i := range 3 {
		a := c.Send(context.Background(), upstream.Call{Secret: "k", Nonce: int64(i + 1), RequestID: "r"})
		require.Equal(t, upstream.OK, a.Class, "send %d: %s", i, a.Msg)
		time.Sleep(200 * time.Millisecond) // the upstream closes the idle connection
	}
	require.EqualValues(t, 3, conns.Load())
}

func TestClient_ReadsACompressedAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "gzip", r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = io.WriteString(zw, `{"status":"OK","req_id":"z"}`)
		_ = zw.Close()
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, 2*time.Second)
	a := c.Send(context.Background(), upstream.Call{Secret: "k", Nonce: 1, RequestID: "z"})
	require.Equal(t, upstream.OK, a.Class, a.Msg)
	require.JSONEq(t, `{"status":"OK","req_id":"z"}`, string(a.Body))
}

// TestClient_ACanceledSendIsNotATimeout: a send its caller cancels (a worker
// stopping) ends at once, as a broken connection whose outcome is unknown.
func TestClient_ACanceledSendIsNotATimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := newClient(t, srv.URL, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	a := c.Send(ctx, upstream.Call{Secret: "k", Nonce: 1, RequestID: "r"})
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, upstream.ConnError, a.Class, a.Msg)
	require.Contains(t, a.Msg, "canceled")
	require.True(t, a.Unknown())
}
