package exchange

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/profile"
)

// The simulator's other shapes of API, beside the reference's GET /api/request.
// All share the keys, the rules and the accounts of the reference endpoint.
//
// # Signed mode: POST /api/private
//
// Kraken's scheme (profile.SignedYAML): the key's id in the API-Key header, a
// form body with nonce and req_id, and API-Sign the base64 HMAC-SHA512, keyed by
// the base64-decoded secret, of the path and the SHA-256 of nonce and body. An
// unknown id or a wrong signature is refused with 401 {"status":"error",
// "error_msg":"invalid signature"} before any rule (no rate slot, no nonce); a
// signed request then goes through the reference's steps 2 to 6.
//
// # Per-minute mode: POST /v1/complete
//
// An LLM API's shape (profile.PerMinuteYAML): the secret as a bearer token, the
// request id in X-Request-Id, no nonce. The rate rule is the server's (run it
// with --limit 60 --window 1m --block-after 0 for 60 a minute); a rejection is a
// 429 {"error":{"message":"rate limit exceeded"}} with Retry-After, the seconds
// until the key's window frees. A 200 answers {"id":"<req_id>","output":"ok"}.
//
// # Throttle fault
//
//	POST /admin/throttle {"for_ms":3000,"retry_after_s":2}
//
// For for_ms from now, every per-minute request is answered 429 with
// Retry-After: retry_after_s, after the incoming delay and without counting as
// a rejection; GET shows what is left, DELETE ends it.

const (
	bodyBadSignature = `{"status":"error","error_msg":"invalid signature"}`
	bodyPerMinute429 = `{"error":{"message":"rate limit exceeded","type":"rate_limit"}}`
	bodyUnauthorized = `{"error":{"message":"invalid api key","type":"auth"}}`
)

// modes is the state of the other shapes: set once in routesExtra, but the
// throttle.
type modes struct {
	signer *profile.Profile
	byID   map[string]*account

	mu            sync.Mutex
	throttleUntil time.Time
	retryAfter    int // seconds
}

// routesExtra adds the other shapes' endpoints.
func (s *Server) routesExtra(mux *http.ServeMux) {
	s.modes.signer, _ = profile.Parse("signed", []byte(profile.SignedYAML)) // valid: profile tests check it
	s.modes.byID = map[string]*account{}
	for _, a := range s.accounts {
		if id := a.key.ID(); id != "" {
			s.modes.byID[id] = a
		}
	}
	mux.HandleFunc("POST /api/private", s.handleSigned)
	mux.HandleFunc("POST /v1/complete", s.handlePerMinute)
	mux.HandleFunc("GET /admin/throttle", s.handleThrottle)
	mux.HandleFunc("POST /admin/throttle", s.handleThrottle)
	mux.HandleFunc("DELETE /admin/throttle", s.handleThrottle)
}

// handleSigned checks the signature, then serves the request by the reference's
// rules, as if its key, nonce and req_id had come in a GET's query.
func (s *Server) handleSigned(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, maxFormBody))
	form, err := url.ParseQuery(string(raw))
	a := s.modes.byID[r.Header.Get("API-Key")]
	if err != nil || a == nil {
		s.unknownKey.Add(1)
		s.answer(w, faultPlan{}, http.StatusUnauthorized, []byte(bodyBadSignature))
		return
	}
	nonce := form.Get("nonce")
	want, err := s.modes.signer.Signature(a.key.Secret(), http.MethodPost, r.URL.EscapedPath(), "", string(raw), nonce, "")
	if err != nil || r.Header.Get("API-Sign") != want {
		s.unknownKey.Add(1)
		s.answer(w, faultPlan{}, http.StatusUnauthorized, []byte(bodyBadSignature))
		return
	}
	ref := r.Clone(r.Context())
	ref.Method, ref.Body, ref.ContentLength = http.MethodGet, http.NoBody, 0
	ref.URL.RawQuery = url.Values{"api_key": {a.key.Secret()}, "nonce": {nonce}, "req_id": {form.Get("req_id")}}.Encode()
	s.handleRequest(w, ref)
}

// handlePerMinute serves the per-minute shape: steps 2 to 4 and 6 of the rules,
// no nonce, 429s with Retry-After.
func (s *Server) handlePerMinute(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxFormBody))
	plan := s.faults.plan(s.cfg.Now(), s.uniform)
	if plan.down {
		s.faultCount.Add(1)
		if plan.drop && dropConn(w) {
			return
		}
		writeBody(w, plan.status, bodyFault)
		return
	}
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a := s.bySecret[secret]
	if !ok || a == nil {
		s.unknownKey.Add(1)
		s.answer(w, plan, http.StatusUnauthorized, []byte(bodyUnauthorized))
		return
	}
	if plan.spike {
		s.spikes.Add(1)
	}
	if err := s.cfg.Sleep(s.stop, s.delay(s.cfg.InDelay)+plan.extraIn); err != nil {
		writeBody(w, http.StatusServiceUnavailable, bodyClosing)
		return
	}
	if secs, on := s.throttled(); on {
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.answer(w, plan, http.StatusTooManyRequests, []byte(bodyPerMinute429))
		return
	}
	if plan.inject && !plan.after {
		s.faultCount.Add(1)
		s.answer(w, plan, plan.status, []byte(bodyFault))
		return
	}
	reqID := r.Header.Get("X-Request-Id")
	v, wait := a.checkNoNonce(s.cfg.Now)
	status, body := http.StatusOK, perMinuteOK(reqID)
	switch v {
	case verdictOK:
		s.ids.record(reqID, s.cfg.Now())
	case verdictBlocked, verdictRateLimited:
		status, body = http.StatusTooManyRequests, []byte(bodyPerMinute429)
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
	}
	if plan.inject {
		s.faultCount.Add(1)
		status, body = plan.status, []byte(bodyFault)
	}
	s.answer(w, plan, status, body)
}

func perMinuteOK(reqID string) []byte {
	b, _ := json.Marshal(map[string]string{"id": reqID, "output": "ok"})
	return b
}

// checkNoNonce applies steps 3 and 4 of the rules to a request arriving now,
// with no nonce; a rejection also says how long until the key's window frees.
func (a *account) checkNoNonce(now func() time.Time) (verdict, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := now().UnixMilli()
	if a.blocked() {
		a.counts.blockedAnswers++
		return verdictBlocked, 0
	}
	if t-a.ring[a.next] <= a.window {
		a.rejections++
		a.counts.rateLimited++
		return verdictRateLimited, time.Duration(a.ring[a.next]+a.window+1-t) * time.Millisecond
	}
	a.accept(t)
	a.counts.ok++
	return verdictOK, 0
}

// throttled reports whether the throttle fault is on, and its Retry-After.
func (s *Server) throttled() (int, bool) {
	s.modes.mu.Lock()
	defer s.modes.mu.Unlock()
	return s.modes.retryAfter, s.cfg.Now().Before(s.modes.throttleUntil)
}

// Throttle turns the throttle fault on for d (off when d is 0): per-minute
// requests are answered 429 with Retry-After: retryAfter.
func (s *Server) Throttle(d, retryAfter time.Duration) {
	s.modes.mu.Lock()
	defer s.modes.mu.Unlock()
	s.modes.throttleUntil = s.cfg.Now().Add(d)
	s.modes.retryAfter = int((retryAfter + time.Second - 1) / time.Second)
	s.logger.Info("exchange throttle set", "for", d, "retry_after", retryAfter)
}

type throttleBody struct {
	ForMs       int64 `json:"for_ms"`
	RetryAfterS int   `json:"retry_after_s"`
}

func (s *Server) handleThrottle(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		var b throttleBody
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&b); err != nil || b.ForMs < 0 || b.RetryAfterS < 0 {
			writeJSON(w, http.StatusBadRequest, errorBody{Status: "error", ErrorMsg: fmt.Sprintf("want {\"for_ms\":N,\"retry_after_s\":S}, both at least 0 (%v)", err)})
			return
		}
		s.Throttle(time.Duration(b.ForMs)*time.Millisecond, time.Duration(b.RetryAfterS)*time.Second)
	case http.MethodDelete:
		s.Throttle(0, 0)
	}
	s.modes.mu.Lock()
	left := max(s.modes.throttleUntil.Sub(s.cfg.Now()), 0)
	b := throttleBody{ForMs: left.Milliseconds(), RetryAfterS: s.modes.retryAfter}
	s.modes.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

// SignedKeys returns the reference's five keys as signing keys, for the signed
// mode: named key1 to key5, with ids pub-key1 to pub-key5, and as secret the
// base64 of the reference secret's bytes.
func SignedKeys() []keys.Key {
	var out []keys.Key
	for _, k := range DefaultKeys() {
		out = append(out, keys.NewSigning(k.Name(), "pub-"+k.Name(), base64.StdEncoding.EncodeToString([]byte(k.Secret())), ""))
	}
	return out
}
