// Package service serves ratefleet to any NATS client, in any language: a NATS
// micro service named "ratefleet" whose endpoints submit a request, await its
// result, or do both, over plain request/reply with JSON bodies. A caller needs
// neither Go nor JetStream:
//
//	nats req ratefleet.api.do '{"call":{"path":"/api/request"}}'
//
// The endpoints (under Config.Prefix, "ratefleet.api" by default):
//
//   - submit: {"id"?, "ttl_ms"?, "call"?, "weight"?, "payload"?}, the fields of the
//     wire request record; answers {"id": "..."} once the requests stream stored it.
//   - await: {"id": "...", "timeout_ms"?}; answers the request's wire.Result.
//   - do: a submit body with an optional "timeout_ms"; submits, waits and answers
//     the result.
//
// Errors are answered with micro's error headers (Nats-Service-Error-Code and
// Nats-Service-Error): 400 for a body that cannot be sent, naming the field and
// why; 404 (await) or 408 (do) when no result came in time, with the id in the
// description and in the body ({"id": "..."}) so the caller can await again; 503
// when NATS or JetStream failed, when MaxWaiting requests already wait ("busy,
// retry"), or when the service is stopping.
//
// Every request goes through the client package, so there is one way to submit
// and one to await. A micro endpoint's handler runs on its subscription's one
// goroutine, so each request is checked there (and refused at once if it is
// bad or the service is full) and then waits on a goroutine of its own, which
// answers on the request's reply subject; MaxWaiting bounds how many there are.
// Instances of the service started with the same prefix share the requests
// through micro's queue group.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/wire"
)

// Name is the micro service's name, as `nats micro ls` shows it.
const Name = "ratefleet"

// Version is the version of the service's endpoints and bodies (SemVer, as micro
// requires).
const Version = "1.0.0"

// DefaultPrefix is the subject prefix of the endpoints: ratefleet.api.submit,
// ratefleet.api.await and ratefleet.api.do.
const DefaultPrefix = "ratefleet.api"

// DefaultMaxWaiting is how many requests may wait at once unless Config says.
const DefaultMaxWaiting = 256

// Timeouts of a request that waits: DefaultTimeout when the body names none (and
// for submit, which names none), at most MaxTimeout.
const (
	DefaultTimeout = 5 * time.Second
	MaxTimeout     = 60 * time.Second
)

// The error codes the endpoints answer with, in the Nats-Service-Error-Code header.
const (
	// CodeBadRequest: the body cannot be sent; the description says which field and why.
	CodeBadRequest = "400"
	// CodeNoResult: await found no result in time; await again.
	CodeNoResult = "404"
	// CodeTimeout: do submitted the request but its result did not come in time;
	// await it.
	CodeTimeout = "408"
	// CodeDuplicate: a request with this id is already stored (a retried
	// submit: it is, await it) or already ended; the description says which.
	CodeDuplicate = "409"
	// CodeBadResult: the result found is not one this service reads.
	CodeBadResult = "500"
	// CodeUnavailable: NATS or JetStream failed, the service is busy or stopping;
	// retry (a submit with the same id is stored once).
	CodeUnavailable = "503"
)

// Config configures a Service.
type Config struct {
	// Prefix is the subject prefix of the endpoints; DefaultPrefix when empty.
	Prefix string
	// MaxWaiting bounds the requests handled at once (submitting or waiting);
	// one beyond it is answered 503 "busy, retry". DefaultMaxWaiting when 0.
	MaxWaiting int
	// Logger receives the service's events; slog.Default() when nil. It never
	// gets a request's call or payload.
	Logger *slog.Logger
}

// Service is a running ratefleet micro service.
type Service struct {
	nc    *nats.Conn
	fleet *client.Client
	log   *slog.Logger
	micro micro.Service
	slots chan struct{}
	// life ends the waits still running when Stop gives up on them.
	life context.Context
	end  context.CancelFunc

	mu       sync.Mutex // guards stopping, the waits' Add and answers
	stopping bool
	waits    sync.WaitGroup
	// answers counts each endpoint's answers by code ("200" for a success), for
	// micro's STATS: micro counts only the errors a handler gives before it
	// returns, and a request that waits is answered later.
	answers map[string]map[string]int
}

// EndpointStats is what `nats micro stats` shows as an endpoint's data.
type EndpointStats struct {
	// Answers counts the endpoint's answers by code: "200" for a success, else
	// the error code.
	Answers map[string]int `json:"answers"`
	// Waiting is how many requests of all endpoints are being handled now.
	Waiting int `json:"waiting"`
}

// Start adds the service and its endpoints on nc and returns once the server
// has their subscriptions; it serves from then on, until Stop. fleet submits and
// awaits the requests.
func Start(nc *nats.Conn, fleet *client.Client, cfg Config) (*Service, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if err := wire.ValidSubject(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("service prefix %q: %w", cfg.Prefix, err)
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = DefaultMaxWaiting
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{nc: nc, fleet: fleet, log: cfg.Logger, slots: make(chan struct{}, cfg.MaxWaiting), answers: map[string]map[string]int{}}
	s.life, s.end = context.WithCancel(context.Background())
	m, err := micro.AddService(nc, micro.Config{
		Name:        Name,
		Version:     Version,
		Description: "submit requests to the ratefleet fleet and await their results",
		Metadata: map[string]string{
			"request_version": strconv.Itoa(wire.Version),
			"result_version":  strconv.Itoa(wire.ResultVersion),
			"max_waiting":     strconv.Itoa(cfg.MaxWaiting),
		},
		StatsHandler: func(e *micro.Endpoint) any { return s.stats(e.Name) },
	})
	if err != nil {
		s.end()
		return nil, fmt.Errorf("add the %s service: %w", Name, err)
	}
	s.micro = m
	g := m.AddGroup(cfg.Prefix)
	for _, e := range []struct {
		name        string
		handle      endpoint
		body, reply string
	}{
		{"submit", s.submit, `{"id"?, "ttl_ms"?, "call"?, "weight"?, "payload"?}`, `{"id"}`},
		{"await", s.await, `{"id", "timeout_ms"?}`, "the result (wire.Result)"},
		{"do", s.do, `{"id"?, "ttl_ms"?, "call"?, "weight"?, "payload"?, "timeout_ms"?}`, "the result (wire.Result)"},
	} {
		err := g.AddEndpoint(e.name, s.handler(e.name, e.handle), micro.WithEndpointMetadata(map[string]string{"body": e.body, "reply": e.reply}))
		if err != nil {
			_ = m.Stop()
			s.end()
			return nil, fmt.Errorf("add the %s endpoint %s.%s: %w", Name, cfg.Prefix, e.name, err)
		}
	}
	// Once the server has the subscriptions, a caller's request finds them.
	if err := nc.FlushTimeout(DefaultTimeout); err != nil {
		_ = m.Stop()
		s.end()
		return nil, fmt.Errorf("start the %s service: NATS did not confirm its subscriptions: %w", Name, err)
	}
	return s, nil
}

// Info describes the running service, as `nats micro info` shows it.
func (s *Service) Info() micro.Info { return s.micro.Info() }

// Stop stops taking requests (the endpoints' subscriptions drain, so the queue
// group's other instances get the next ones), then lets the requests already
// waiting finish until ctx ends; those still waiting then are answered 503 with
// their id, to await again. It returns once every request was answered and the
// server routes no more requests here.
func (s *Service) Stop(ctx context.Context) error {
	err := s.micro.Stop()
	if err == nil && !s.nc.IsClosed() {
		// Once the server has the unsubscriptions, no request comes here.
		err = s.nc.FlushTimeout(DefaultTimeout)
	}
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.waits.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.end()
		<-done
	}
	s.end()
	if err != nil {
		return fmt.Errorf("stop the %s service: %w", Name, err)
	}
	return nil
}

// stats returns the data of endpoint name's statistics.
func (s *Service) stats(name string) EndpointStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return EndpointStats{Answers: maps.Clone(s.answers[name]), Waiting: len(s.slots)}
}

// count notes an answer of endpoint name.
func (s *Service) count(name, code string) {
	if code == "" {
		code = "200"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.answers[name] == nil {
		s.answers[name] = map[string]int{}
	}
	s.answers[name][code]++
}

// endpoint checks a request's body and returns what answers it, or an error
// saying why the body is refused (400).
type endpoint func(body []byte) (answer func(context.Context) reply, err error)

// reply is an endpoint's answer: a body and, for an error, its code and
// description.
type reply struct {
	code, description string
	body              []byte
}

// handler runs on the endpoint's subscription: it refuses a bad body or a
// request beyond MaxWaiting at once, and answers the others from a goroutine
// of their own.
func (s *Service) handler(name string, e endpoint) micro.HandlerFunc {
	return func(req micro.Request) {
		if req.Reply() == "" {
			s.log.Debug("request without a reply subject ignored", "endpoint", name)
			return
		}
		answer, err := e(req.Data())
		if err != nil {
			s.log.Debug("request refused", "endpoint", name, "err", err)
			s.count(name, CodeBadRequest)
			s.refuse(req, CodeBadRequest, err.Error())
			return
		}
		if why := s.enter(); why != "" {
			s.count(name, CodeUnavailable)
			s.refuse(req, CodeUnavailable, why)
			return
		}
		to := req.Reply()
		go func() {
			defer s.leave()
			r := answer(s.life)
			if r.code != "" && r.code != CodeBadRequest && r.code != CodeNoResult && r.code != CodeTimeout {
				s.log.Warn("request failed", "endpoint", name, "code", r.code, "err", r.description)
			}
			s.count(name, r.code)
			s.send(to, r)
		}()
	}
}

// enter takes a slot for a request that waits; it returns why not when the
// service is full or stopping.
func (s *Service) enter() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return "the service is stopping, retry"
	}
	select {
	case s.slots <- struct{}{}:
		s.waits.Add(1)
		return ""
	default:
		return "busy, retry"
	}
}

func (s *Service) leave() {
	<-s.slots
	s.waits.Done()
}

// refuse answers req at once with an error, from the endpoint's handler.
func (s *Service) refuse(req micro.Request, code, description string) {
	if err := req.Error(code, oneLine(description), nil); err != nil {
		s.log.Warn("cannot answer a request", "subject", req.Subject(), "err", err)
	}
}

// send answers on the reply subject to. Answers that waited are published
// here rather than through micro.Request, whose handler has returned by then.
func (s *Service) send(to string, r reply) {
	msg := &nats.Msg{Subject: to, Data: r.body}
	if r.code != "" {
		msg.Header = nats.Header{micro.ErrorCodeHeader: {r.code}, micro.ErrorHeader: {oneLine(r.description)}}
	}
	if err := s.nc.PublishMsg(msg); err != nil {
		s.log.Warn("cannot answer a request", "code", r.code, "err", err)
	}
}

// oneLine makes s fit a header value.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", " ").Replace(s)
}

func (s *Service) submit(body []byte) (func(context.Context) reply, error) {
	var b submitBody
	if err := decode(body, &b, submitFields); err != nil {
		return nil, err
	}
	r, err := b.request()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) reply {
		ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
		if _, err := s.fleet.Submit(ctx, r); err != nil {
			return submitFailed(r.ID, err)
		}
		return withID(r.ID)
	}, nil
}

func (s *Service) await(body []byte) (func(context.Context) reply, error) {
	var b awaitBody
	if err := decode(body, &b, awaitFields); err != nil {
		return nil, err
	}
	if b.ID == nil || *b.ID == "" {
		return nil, errors.New(`id: missing; the body is {"id": "...", "timeout_ms"?}`)
	}
	id := *b.ID
	timeout, err := timeoutOf(b.TimeoutMS)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) reply {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		res, err := s.fleet.Await(ctx, id)
		if err != nil {
			return waitFailed(id, timeout, CodeNoResult, err)
		}
		return result(res)
	}, nil
}

func (s *Service) do(body []byte) (func(context.Context) reply, error) {
	var b doBody
	if err := decode(body, &b, doFields); err != nil {
		return nil, err
	}
	r, err := b.submit().request()
	if err != nil {
		return nil, err
	}
	timeout, err := timeoutOf(b.TimeoutMS)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) reply {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		res, err := s.fleet.Do(ctx, r)
		switch {
		case err == nil:
			return result(res)
		case errors.Is(err, client.ErrBadResult):
			return reply{code: CodeBadResult, description: err.Error(), body: idBody(r.ID)}
		case res.ID == "": // not stored
			return submitFailed(r.ID, err)
		}
		return waitFailed(r.ID, timeout, CodeTimeout, err)
	}, nil
}

// submitFailed answers a submit that the requests stream did not confirm.
func submitFailed(id string, err error) reply {
	switch {
	case errors.Is(err, client.ErrInvalidRequest):
		return reply{code: CodeBadRequest, description: err.Error()}
	case errors.Is(err, client.ErrDuplicate):
		return reply{code: CodeDuplicate, body: idBody(id), description: err.Error()}
	case errors.Is(err, context.Canceled):
		return reply{code: CodeUnavailable, body: idBody(id), description: fmt.Sprintf(
			"the service stopped before the requests stream confirmed request %q: it may or may not be stored; submit it again with the same id (stored once: a 409 then says it is stored)", id)}
	}
	return reply{code: CodeUnavailable, body: idBody(id),
		description: fmt.Sprintf("%v; submitting again with id %q stores it once (a 409 then says it is stored)", err, id)}
}

// waitFailed answers a wait for the result of id that ended without one:
// timedOut (404 for await, 408 for do) when its time was up.
func waitFailed(id string, timeout time.Duration, timedOut string, err error) reply {
	switch {
	case errors.Is(err, client.ErrBadResult):
		return reply{code: CodeBadResult, description: err.Error(), body: idBody(id)}
	case errors.Is(err, context.DeadlineExceeded):
		return reply{code: timedOut, body: idBody(id), description: fmt.Sprintf(
			"no result for request %q within %s: it may still be queued or waiting for a key (or no request has this id); await it again", id, timeout)}
	case errors.Is(err, context.Canceled):
		return reply{code: CodeUnavailable, body: idBody(id), description: fmt.Sprintf(
			"the service stopped before the result of request %q came; await it again", id)}
	}
	return reply{code: CodeUnavailable, body: idBody(id), description: err.Error()}
}

func result(r wire.Result) reply {
	b, err := r.Encode()
	if err != nil {
		return reply{code: CodeBadResult, description: err.Error(), body: idBody(r.ID)}
	}
	return reply{body: b}
}

func withID(id string) reply { return reply{body: idBody(id)} }

// idBody is {"id": id}, the body of submit's answer and of the errors that name
// a request.
func idBody(id string) []byte {
	b, _ := json.Marshal(struct {
		ID string `json:"id"`
	}{id}) // a string always encodes
	return b
}
