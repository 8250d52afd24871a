package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/internal/service"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
	"github.com/ratefleet/ratefleet/wire"
)

// setup is a running service and a caller's connection to its NATS.
type setup struct {
	url    string
	caller *nats.Conn
	svc    *service.Service
}

// start runs embedded NATS with streams.yaml applied, the simulator (without
// delays), the service on a connection of its own and, when withWorker, a worker
// holding the simulator's five keys. Without a worker no request is ever served,
// which is what the waits that must run out need.
func start(t *testing.T, withWorker bool, cfg service.Config) setup {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	ex := exchange.DefaultConfig()
	ex.InDelay, ex.OutDelay = exchange.DelayRange{}, exchange.DelayRange{}
	env := testenv.Start(t, testenv.Options{Exchange: &ex})
	url := env.NATS.ClientURL()
	if withWorker {
		startWorker(t, env, quiet)
	}
	nc, err := nats.Connect(url, nats.Name("service"))
	require.NoError(t, err)
	fleetClient, err := client.New(nc)
	require.NoError(t, err)
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	svc, err := service.Start(nc, fleetClient, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(ctx))
		nc.Close()
	})
	caller, err := nats.Connect(url, nats.Name("caller"))
	require.NoError(t, err)
	t.Cleanup(caller.Close)
	return setup{url: url, caller: caller, svc: svc}
}

func startWorker(t *testing.T, env *testenv.Env, log *slog.Logger) {
	t.Helper()
	up, err := upstream.New(env.ExchangeURL, 2*time.Second, 8, nil)
	require.NoError(t, err)
	factory, err := worker.NewPacerFactory(worker.Adaptive, limiter.Config{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := worker.New(ctx, env.Conn.JS, worker.Config{
		ID: "w1", Keys: exchange.DefaultKeys(), MaxKeys: 5, Upstream: up, Streams: env.Conn.Streams,
		NewPacer: factory, Logger: log,
	})
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait(); up.Close() })
}

// answer is one reply of the service: its error code and description (empty on
// success) and its body.
type answer struct {
	code, description string
	body              []byte
}

func (a answer) String() string { return a.code + " " + a.description + " " + string(a.body) }

func call(t *testing.T, nc *nats.Conn, subject, body string) answer {
	t.Helper()
	msg, err := nc.Request(subject, []byte(body), 30*time.Second)
	require.NoError(t, err, "%s %s", subject, body)
	return answer{msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader), msg.Data}
}

func result(t *testing.T, a answer) wire.Result {
	t.Helper()
	require.Empty(t, a.code, "an error: %s", a)
	r, err := wire.DecodeResult(a.body)
	require.NoError(t, err, string(a.body))
	return r
}

func idOf(t *testing.T, body []byte) string {
	t.Helper()
	var v struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(body, &v), string(body))
	return v.ID
}

func TestService_DoAnswersTheServedResult(t *testing.T) {
	s := start(t, true, service.Config{})

	r := result(t, call(t, s.caller, "ratefleet.api.do", `{"id":"do-1","ttl_ms":20000,"payload":{"n":1},"timeout_ms":30000}`))
	require.Equal(t, "do-1", r.ID)
	require.Equal(t, wire.Served, r.Outcome)
	require.Equal(t, 200, r.Status)
	require.Contains(t, r.Body, `"req_id":"do-1"`, "the simulator echoes the request id it was sent")

	// Without an id, the service names the request; the result carries that name.
	r = result(t, call(t, s.caller, "ratefleet.api.do", `{"call":{"path":"/api/request"},"ttl_ms":20000,"timeout_ms":30000}`))
	require.NotEmpty(t, r.ID)
	require.True(t, r.OK(), "%+v", r)
}

func TestService_SubmitThenAwait(t *testing.T) {
	s := start(t, true, service.Config{})

	a := call(t, s.caller, "ratefleet.api.submit", `{"id":"sub-1","ttl_ms":20000,"weight":1}`)
	require.Empty(t, a.code, a.String())
	require.JSONEq(t, `{"id":"sub-1"}`, string(a.body))

	r := result(t, call(t, s.caller, "ratefleet.api.await", `{"id":"sub-1","timeout_ms":30000}`))
	require.Equal(t, "sub-1", r.ID)
	require.Equal(t, wire.Served, r.Outcome)

	// A result already published is found again, as often as asked.
	again := result(t, call(t, s.caller, "ratefleet.api.await", `{"id":"sub-1"}`))
	require.Equal(t, r, again)
}

func TestService_RefusesABadBodyWith400NamingTheField(t *testing.T) {
	s := start(t, false, service.Config{})
	for _, tc := range []struct {
		name, endpoint, body, want string
	}{
		{"not JSON", "submit", `{"id":`, "not valid JSON"},
		{"not an object", "submit", `[1]`, "must be a JSON object"},
		{"empty", "do", ``, "must be a JSON object"},
		{"two values", "submit", `{} {}`, "more than one JSON value"},
		{"unknown field", "submit", `{"id":"a","reply_to":"ratefleet.reply.x"}`, `"reply_to": not a field of this body`},
		{"a wire field the caller may not set", "do", `{"created":"2026-01-02T03:04:05Z"}`, `"created": not a field`},
		{"timeout on submit", "submit", `{"timeout_ms":10}`, `"timeout_ms": not a field`},
		{"zero ttl", "submit", `{"ttl_ms":0}`, "ttl_ms 0: must be positive"},
		{"negative ttl", "do", `{"ttl_ms":-5}`, "ttl_ms -5: must be positive"},
		{"ttl as a string", "do", `{"ttl_ms":"1s"}`, "ttl_ms: want a number, not a JSON string"},
		{"empty id", "submit", `{"id":""}`, `id "": must be non-empty`},
		{"id with a space", "submit", `{"id":"a b"}`, `id "a b"`},
		{"weight too large", "submit", `{"weight":5000}`, "weight 5000"},
		{"call path", "do", `{"call":{"path":"api"}}`, `call path "api" must start with /`},
		{"call as a string", "submit", `{"call":"GET /"}`, "call: want an object"},
		{"zero timeout", "do", `{"timeout_ms":0}`, "timeout_ms 0: must be from 1 to 60000"},
		{"timeout too long", "await", `{"id":"a","timeout_ms":60001}`, "timeout_ms 60001"},
		{"await without id", "await", `{"timeout_ms":100}`, "id: missing"},
		{"await with a call", "await", `{"id":"a","call":{"path":"/"}}`, `"call": not a field of this body, which may hold id, timeout_ms`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := call(t, s.caller, "ratefleet.api."+tc.endpoint, tc.body)
			require.Equal(t, service.CodeBadRequest, a.code, a.String())
			require.Contains(t, a.description, tc.want)
		})
	}
}

func TestService_NoResultInTimeNamesTheIDToAwaitAgain(t *testing.T) {
	s := start(t, false, service.Config{}) // no worker: nothing is ever served

	a := call(t, s.caller, "ratefleet.api.await", `{"id":"nobody-sent-this","timeout_ms":100}`)
	require.Equal(t, service.CodeNoResult, a.code, a.String())
	require.Contains(t, a.description, `"nobody-sent-this"`)
	require.Equal(t, "nobody-sent-this", idOf(t, a.body))

	a = call(t, s.caller, "ratefleet.api.do", `{"ttl_ms":60000,"timeout_ms":1000}`) // the submit fits in it on a loaded machine
	require.Equal(t, service.CodeTimeout, a.code, a.String())
	id := idOf(t, a.body)
	require.NotEmpty(t, id)
	require.Contains(t, a.description, id)

	a = call(t, s.caller, "ratefleet.api.await", `{"id":"`+id+`","timeout_ms":100}`)
	require.Equal(t, service.CodeNoResult, a.code, "still queued: %s", a)
}

// The service answers 503 beyond MaxWaiting, and on Stop answers those still
// waiting with their id rather than leaving them to time out.
func TestService_BusyBeyondMaxWaitingAndStopAnswersTheWaiting(t *testing.T) {
	s := start(t, false, service.Config{MaxWaiting: 1})

	inbox := nats.NewInbox()
	held, err := s.caller.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, s.caller.PublishRequest("ratefleet.api.do", inbox, []byte(`{"id":"held","ttl_ms":60000,"timeout_ms":60000}`)))
	// The endpoint handles its requests in order: the held one has its slot when
	// this one comes.
	a := call(t, s.caller, "ratefleet.api.do", `{"id":"other","timeout_ms":100}`)
	require.Equal(t, service.CodeUnavailable, a.code, a.String())
	require.Equal(t, "busy, retry", a.description)

	info := stats(t, s.caller)
	require.Equal(t, 1, info["do"].Waiting)
	require.Equal(t, map[string]int{service.CodeUnavailable: 1}, info["do"].Answers)

	stopped, cancel := context.WithCancel(context.Background())
	cancel() // no grace: the waiting request is answered at once
	require.NoError(t, s.svc.Stop(stopped))
	msg, err := held.NextMsg(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, service.CodeUnavailable, msg.Header.Get(micro.ErrorCodeHeader))
	// Stopped while submitting or while waiting: either way the caller learns so,
	// and the id to go on with.
	require.Contains(t, msg.Header.Get(micro.ErrorHeader), `the service stopped before the`)
	require.Contains(t, msg.Header.Get(micro.ErrorHeader), `request "held"`)
	require.Equal(t, "held", idOf(t, msg.Data))

	_, err = s.caller.Request("ratefleet.api.submit", []byte(`{}`), 5*time.Second)
	require.ErrorIs(t, err, nats.ErrNoResponders, "a stopped service takes no request")
}

func stats(t *testing.T, nc *nats.Conn) map[string]service.EndpointStats {
	t.Helper()
	msg, err := nc.Request("$SRV.STATS.ratefleet", nil, 5*time.Second)
	require.NoError(t, err)
	var st micro.Stats
	require.NoError(t, json.Unmarshal(msg.Data, &st))
	out := map[string]service.EndpointStats{}
	for _, e := range st.Endpoints {
		var es service.EndpointStats
		require.NoError(t, json.Unmarshal(e.Data, &es), string(e.Data))
		out[e.Name] = es
	}
	return out
}

func TestService_DiscoveredWithItsEndpoints(t *testing.T) {
	s := start(t, false, service.Config{})

	msg, err := s.caller.Request("$SRV.INFO.ratefleet", nil, 5*time.Second)
	require.NoError(t, err)
	var info micro.Info
	require.NoError(t, json.Unmarshal(msg.Data, &info))
	require.Equal(t, service.Name, info.Name)
	require.Equal(t, service.Version, info.Version)
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject)
	}
	require.Equal(t, []string{"ratefleet.api.submit", "ratefleet.api.await", "ratefleet.api.do"}, subjects)

	call(t, s.caller, "ratefleet.api.submit", `{"bogus":1}`)
	require.Equal(t, map[string]int{service.CodeBadRequest: 1}, stats(t, s.caller)["submit"].Answers)
}

func TestService_PrefixFromConfig(t *testing.T) {
	s := start(t, false, service.Config{Prefix: "acme.fleet"})
	a := call(t, s.caller, "acme.fleet.submit", `{"id":"p-1"}`)
	require.Empty(t, a.code, a.String())
	require.JSONEq(t, `{"id":"p-1"}`, string(a.body))

	_, err := service.Start(s.caller, nil, service.Config{Prefix: "acme.*"})
	require.ErrorContains(t, err, "wildcard")
}

// The service runs as the producer role and a caller with that role uses it:
// it receives requests and discovery on its subjects and answers on each
// request's reply subject (allow_responses), with no permission refused.
func TestService_RunsAsTheServiceRoleCalledByAProducer(t *testing.T) {
	cfg, err := natsconn.LoadStreams("")
	require.NoError(t, err)
	acc, err := fleet.NewAccess(cfg, t.TempDir(), false, false)
	require.NoError(t, err)
	users, err := acc.Users(cfg)
	require.NoError(t, err)
	ns, err := embedded.Start(embedded.Options{Users: users})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)

	refused := make(chan error, 16)
	connect := func(role string) *nats.Conn {
		c, err := acc.Connection(ns.ClientURL(), role)
		require.NoError(t, err)
		nc, err := nats.Connect(c.URL, append(c.Options, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				refused <- err
			}
		}))...)
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	// The admin applies streams.yaml.
	admin, err := acc.Connection(ns.ClientURL(), roles.Admin)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	applied, err := natsconn.Open(ctx, natsconn.Options{URL: admin.URL, Connect: admin.Options, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	applied.Close()

	nc := connect(roles.Service)
	fleetClient, err := client.New(nc)
	require.NoError(t, err)
	svc, err := service.Start(nc, fleetClient, service.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, svc.Stop(context.Background())) })
	caller := connect(roles.Producer)

	a := call(t, caller, "ratefleet.api.submit", `{"id":"as-producer"}`)
	require.Empty(t, a.code, a.String())
	require.JSONEq(t, `{"id":"as-producer"}`, string(a.body))
	a = call(t, caller, "ratefleet.api.await", `{"id":"as-producer","timeout_ms":100}`)
	require.Equal(t, service.CodeNoResult, a.code, a.String())
	_, err = caller.Request("$SRV.PING.ratefleet", nil, 5*time.Second)
	require.NoError(t, err)
	require.Empty(t, refused)
}

// TestService_NATSCLI calls the service with the real nats CLI, built by
// `make test` into bin/nats at the root of the module.
func TestService_NATSCLI(t *testing.T) {
	natsCLI := filepath.Join(moduleRoot(t), "bin", "nats")
	if _, err := os.Stat(natsCLI); err != nil {
		t.Skipf("%s not built: run `make test` (or `make bin/nats`) to call the service with the nats CLI", natsCLI)
	}
	s := start(t, true, service.Config{})
	home := t.TempDir() // no saved context of the user's may mix in
	run := func(args ...string) (string, error) {
		cmd := exec.Command(natsCLI, append(args, "--server", s.url, "--no-context", "--timeout", "40s")...)
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("req", "ratefleet.api.do", `{"id":"cli-1","ttl_ms":20000,"payload":{"from":"nats req"},"timeout_ms":30000}`)
	require.NoError(t, err, out)
	var body string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") {
			body = line
		}
	}
	r, err := wire.DecodeResult([]byte(body))
	require.NoError(t, err, out)
	require.Equal(t, "cli-1", r.ID)
	require.Equal(t, wire.Served, r.Outcome)
	require.Equal(t, 200, r.Status)

	out, err = run("req", "ratefleet.api.await", `{"id":"cli-none","timeout_ms":100}`)
	require.NoError(t, err, out)
	require.Contains(t, out, "Nats-Service-Error-Code: 404")
	require.Contains(t, out, `{"id":"cli-none"}`)

	out, err = run("micro", "info", "ratefleet")
	require.NoError(t, err, out)
	for _, e := range []string{"submit", "await", "do"} {
		require.Contains(t, out, "ratefleet.api."+e)
	}
}

// moduleRoot is the folder of go.mod, found by walking up from the package's.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "no go.mod above the package")
		dir = parent
	}
}
