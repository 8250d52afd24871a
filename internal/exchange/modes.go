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
	// bodyPerMinuteBanned answers while the upstream's ban (Config.Ban) is on.
	bodyPerMinuteBanned = `{"error":{"message":"banned: too many rate limit errors","type":"rate_limit"}}`
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
	mux.HandleFunc("POST /v1/messages", s.handlePerMinute) // Anthropic's path: the key in x-api-key
	mux.HandleFunc("GET /admin/throttle", s.handleThrottle)
	mux.HandleFunc("POST /admin/throttle", s.handleThrottle)
	mux.HandleFunc("DELETE /admin/throttle", s.handleThrottle)
}

// handleSigned checks the signature, then serves the request by the reference's
// rules, as if its key, nonce and req_id had come in a GET's query.
func (s *Server) handleSigned(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, maxFormBody))
	s.serveSigned(w, r, raw)
}

// serveSigned serves a signed request whose body is raw: refused before any rule
// when its key id or signature is wrong, else by the reference's rules.
func (s *Server) serveSigned(w http.ResponseWriter, r *http.Request, raw []byte) {
	form, err := url.ParseQuery(string(raw))
	a := s.modes.byID[r.Header.Get("API-Key")]
	if err == nil && a != nil {
		nonce := form.Get("nonce")
		want, err := s.modes.signer.Signature(a.key.Secret(), http.MethodPost, r.URL.EscapedPath(), "", string(raw), nonce, "")
		if err == nil && r.Header.Get("API-Sign") == want {
			s.serve(w, r, refCall{a: a, nonce: nonce, reqID: form.Get("req_id"), cost: s.costs.of(r.Method, r.URL.Path)})
			return
		}
	}
	s.unknownKey.Add(1)
	status, body := s.format.badSignature()
	s.answer(w, faultPlan{}, status, body)
}

// handlePerMinute serves the per-minute shape: steps 2 to 4 and 6 of the rules,
// no nonce, 429s with Retry-After; with Config.Tokens, token costs and usage.
func (s *Server) handlePerMinute(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, maxFormBody))
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
	if k := r.Header.Get("X-Api-Key"); !ok && k != "" {
		secret, ok = k, true
	}
	a := s.bySecret[secret]
	if !ok || a == nil {
		s.unknownKey.Add(1)
		s.answer(w, plan, http.StatusUnauthorized, []byte(bodyUnauthorized))
		return
	}
	call := callCost{cost: s.costs.of(r.Method, r.URL.Path)}
	var maxOut int64
	if tc := s.cfg.Tokens; tc != nil {
		in, most, err := tc.input(raw)
		if err != nil {
			b, _ := json.Marshal(map[string]map[string]string{"error": {"message": err.Error(), "type": "invalid_request_error"}})
			s.answer(w, plan, http.StatusBadRequest, b)
			return
		}
		call.cost.InputTokens, call.pending, maxOut = in, true, most
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
	d := s.judge(a, call, "", false)
	s.logDecision(a, d)
	status, body := http.StatusOK, []byte(nil)
	switch d.v {
	case verdictOK:
		s.ids.record(reqID, s.cfg.Now())
	case verdictBlocked, verdictRateLimited:
		status, body = http.StatusTooManyRequests, []byte(bodyPerMinute429)
		w.Header().Set("Retry-After", strconv.Itoa(seconds(d.wait)))
	case verdictBanned:
		status, body = http.StatusTeapot, []byte(bodyPerMinuteBanned)
		w.Header().Set("Retry-After", strconv.Itoa(seconds(d.wait)))
	}
	if plan.inject {
		s.faultCount.Add(1)
		status, body = plan.status, []byte(bodyFault)
	}
	s.answerThen(w, plan, func(h http.Header) (int, []byte) {
		if d.v == verdictOK && s.cfg.Tokens != nil {
			// The output is known only now, and charged now, as LLM APIs do.
			out := s.cfg.Tokens.output(s.seed, reqID, maxOut)
			s.chargeOutput(a, out)
			if body == nil {
				body = perMinuteUsage(reqID, call.cost.InputTokens, out)
			}
		}
		if body == nil {
			body = perMinuteOK(reqID)
		}
		if d.v != verdictBanned {
			s.writeUsage(h, a, call.cost)
		}
		return status, body
	})
}

func perMinuteOK(reqID string) []byte {
	b, _ := json.Marshal(map[string]string{"id": reqID, "output": "ok"})
	return b
}

// llmAnswer is the per-minute 200 answer with token counts, as LLM APIs report
// them.
type llmAnswer struct {
	ID     string   `json:"id"`
	Output string   `json:"output"`
	Usage  llmUsage `json:"usage"`
}

type llmUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

func perMinuteUsage(reqID string, in, out int64) []byte {
	b, _ := json.Marshal(llmAnswer{ID: reqID, Output: "ok", Usage: llmUsage{in, out}})
	return b
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
