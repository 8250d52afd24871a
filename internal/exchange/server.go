package exchange

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the simulated exchange. Use Handler to serve it on a listener of your own,
// or Open and Close. It is safe for concurrent use.
type Server struct {
	// Set once by New.
	cfg      Config
	logger   *slog.Logger
	accounts []*account          // in Config.Keys order
	bySecret map[string]*account // the same accounts, by API key
	handler  http.Handler
	seed     uint64    // Config.Seed, or the one drawn
	costs    costTable // Config.Costs
	format   Format
	limits   *limits // the model's rules, ban and outside client; nil for none
	// stop ends the delays of requests in flight when Close gives up waiting.
	stop   context.Context
	cancel context.CancelFunc

	rngMu sync.Mutex
	rng   *rand.Rand

	faults     faultState
	modes      modes // the signed and per-minute shapes (modes.go)
	ids        *idLedger
	unknownKey atomic.Uint64
	faultCount atomic.Uint64
	spikes     atomic.Uint64
	since      atomic.Int64 // the run's start, Unix ms: New or the last ResetStats

	mu        sync.Mutex // guards the listener and the HTTP server
	ln        net.Listener
	srv       *http.Server
	serveDone chan struct{}
}

// New returns a server with the rules of cfg. It fails, saying what to fix, on a
// Config that cannot work. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleepTimer
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s := &Server{
		cfg:      cfg,
		logger:   logger,
		bySecret: make(map[string]*account, len(cfg.Keys)),
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ids:      newIDLedger(cfg.MaxIDs),
		seed:     seed,
		costs:    newCostTable(cfg.Costs),
		format:   cfg.Format,
	}
	s.stop, s.cancel = context.WithCancel(context.Background())
	for _, k := range cfg.Keys {
		a := newAccount(k, cfg.Limit, cfg.Window, cfg.BlockAfter)
		if len(cfg.Accounts) > 0 {
			a.label = accountOf(cfg.Accounts, k.Name())
		}
		s.accounts = append(s.accounts, a)
		s.bySecret[k.Secret()] = a
	}
	s.since.Store(cfg.Now().UnixMilli())
	s.limits = newLimits(cfg, s.accounts, s.since.Load())
	s.faults.set(cfg.Faults, cfg.Now())
	s.handler = s.routes()
	logger.Info("exchange rules",
		"keys", len(cfg.Keys), "limit", cfg.Limit, "window", cfg.Window,
		"in_delay", cfg.InDelay.String(), "out_delay", cfg.OutDelay.String(),
		"block_after", cfg.BlockAfter, "seed", seed)
	if cfg.Model != "" || s.limits != nil {
		logger.Info("exchange model", "model", cmp.Or(cfg.Model, "custom"), "rules", len(cfg.Rules),
			"paths", len(cfg.Costs), "ban_after", cfg.Ban.After, "outside_rate", cfg.Outside.Rate,
			"format", cmp.Or(string(cfg.Format), "reference"), "no_nonce", cfg.NoNonce)
	}
	for _, a := range s.accounts {
		logger.Debug("exchange key", "key", a.key)
	}
	return s, nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/request", s.handleRequest)
	mux.HandleFunc("GET /stats", s.handleStats)
	mux.HandleFunc("GET /admin/faults", s.handleGetFaults)
	mux.HandleFunc("POST /admin/faults", s.handleSetFaults)
	mux.HandleFunc("DELETE /admin/faults", s.handleClearFaults)
	mux.HandleFunc("POST /admin/reset-stats", s.handleResetStats)
	s.routesExtra(mux)
	s.routePaths(mux)
	return mux
}

// Handler returns the server's HTTP handler: the API, /stats and /admin.
func (s *Server) Handler() http.Handler { return s.handler }

// Open listens on addr (such as 127.0.0.1:8080, or 127.0.0.1:0 for any free port) and
// serves in the background. The listener is bound when Open returns, so a busy port
// fails here.
func (s *Server) Open(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return fmt.Errorf("open %s: already serving on %s", addr, s.ln.Addr())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	s.serveDone = make(chan struct{})
	go func(srv *http.Server, done chan<- struct{}) {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("exchange stopped serving", "err", err)
		}
	}(s.srv, s.serveDone)
	s.logger.Info("exchange listening", "url", s.url())
	return nil
}

// Addr returns the address the server listens on, with the real port after :0, or ""
// before Open.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL returns the base URL of the API, such as http://127.0.0.1:8080, or "" before
// Open. A server listening on all interfaces is named by its loopback address.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url()
}

func (s *Server) url() string {
	if s.ln == nil {
		return ""
	}
	a, ok := s.ln.Addr().(*net.TCPAddr)
	if !ok {
		return "http://" + s.ln.Addr().String()
	}
	ip := a.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
		if a.IP.To4() == nil {
			ip = net.IPv6loopback
		}
	}
	return "http://" + net.JoinHostPort(ip.String(), fmt.Sprint(a.Port))
}

// Close stops the server gracefully: it stops accepting, lets the requests in flight
// finish, and returns when they have, or when ctx is done: then it ends their delays,
// closes their connections and returns the context's error. Close on a server that
// was never opened only ends the delays of requests served through Handler.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	srv, done := s.srv, s.serveDone
	s.mu.Unlock()
	defer s.cancel()
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil {
		s.cancel()
		_ = srv.Close()
		<-done
		return fmt.Errorf("shut down exchange: %w", err)
	}
	<-done
	return nil
}

// Faults returns the faults in force; DownFor is what is left of a down period.
func (s *Server) Faults() Faults { return s.faults.get(s.cfg.Now()) }

// SetFaults replaces the faults in force; f.DownFor counts from now.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.faults.set(f, s.cfg.Now())
	s.logger.Info("exchange faults set",
		"error_rate", f.ErrorRate, "error_status", f.status(), "error_after", f.ErrorAfter,
		"extra_delay", f.ExtraDelay, "extra_in_delay", f.ExtraInDelay,
		"down_for", f.DownFor, "down_drop", f.DownDrop)
	return nil
}

// delay draws a whole number of milliseconds uniformly from r, both ends included.
func (s *Server) delay(r DelayRange) time.Duration {
	lo, hi := r.Min.Milliseconds(), r.Max.Milliseconds()
	if hi <= lo {
		return r.Min
	}
	s.rngMu.Lock()
	n := s.rng.Int64N(hi - lo + 1)
	s.rngMu.Unlock()
	return time.Duration(lo+n) * time.Millisecond
}

// uniform draws a number from [0, 1).
func (s *Server) uniform() float64 {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64()
}
