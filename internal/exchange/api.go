package exchange

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"

	"github.com/ratefleet/ratefleet/internal/keys"
)

// The API's error answers, byte for byte as the reference exchange writes them.
const (
	bodyInvalidKey  = `{"status":"error","error_msg":"invalid api key"}`
	bodyBlocked     = `{"status":"error","error_msg":"too many rate limit errors: blocked"}`
	bodyRateLimited = `{"status":"error","error_msg":"exceeded rate limit"}`
	bodyBadNonce    = `{"status":"error","error_msg":"invalid nonce"}`
	// Answers of the simulator's own.
	bodyFault   = `{"status":"error","error_msg":"injected fault"}`
	bodyClosing = `{"status":"error","error_msg":"server closing"}`
	bodyMethod  = `{"status":"error","error_msg":"method not allowed: use GET"}`
)

// maxFormBody bounds the form body read from a GET.
const maxFormBody = 64 << 10

// handleRequest serves GET /api/request, one step of the rules after the other (see
// the package doc).
func (s *Server) handleRequest(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeBody(w, http.StatusMethodNotAllowed, bodyMethod)
		return
	}
	plan := s.faults.plan(s.cfg.Now(), s.uniform)
	if plan.down {
		s.faultCount.Add(1)
		if plan.drop && dropConn(w) {
			return
		}
		writeBody(w, plan.status, bodyFault)
		return
	}
	p := readParams(r)
	apiKey, nonce, reqID := p.Get("api_key"), p.Get("nonce"), p.Get("req_id")

	// Step 1: an unknown key gets only the outgoing delay.
	a := s.bySecret[apiKey]
	if a == nil {
		s.unknownKey.Add(1)
		if s.logger.Enabled(r.Context(), slog.LevelDebug) {
			// The fingerprint tells which key a client sent without showing it.
			s.logger.Debug("exchange unknown api key", "fp", keys.New("", apiKey).Fingerprint())
		}
		s.answer(w, plan, http.StatusUnauthorized, []byte(bodyInvalidKey))
		return
	}

	if plan.spike {
		s.spikes.Add(1)
	}
	// Step 2: the incoming delay; the arrival time is read in check, under the key's
	// lock. The delays run on the server's context, not the request's: a client
	// that gives up does not stop its request.
	if err := s.cfg.Sleep(s.stop, s.delay(s.cfg.InDelay)+plan.extraIn); err != nil {
		writeBody(w, http.StatusServiceUnavailable, bodyClosing)
		return
	}
	if plan.inject && !plan.after {
		s.faultCount.Add(1)
		s.answer(w, plan, plan.status, []byte(bodyFault))
		return
	}

	// Steps 3 to 5.
	v, blockedNow := a.check(s.cfg.Now, nonce)
	if blockedNow {
		s.logger.Warn("exchange key blocked until restart", "key", a.key, "rejections", s.cfg.BlockAfter)
	}
	var status int
	var body []byte
	switch v {
	case verdictOK:
		s.ids.record(reqID, s.cfg.Now())
		status, body = http.StatusOK, okBody(reqID)
	case verdictBlocked:
		status, body = http.StatusTooManyRequests, []byte(bodyBlocked)
	case verdictRateLimited:
		status, body = http.StatusTooManyRequests, []byte(bodyRateLimited)
	case verdictBadNonce:
		status, body = http.StatusBadRequest, []byte(bodyBadNonce)
	}
	if plan.inject {
		s.faultCount.Add(1)
		status, body = plan.status, []byte(bodyFault)
	}
	if s.logger.Enabled(r.Context(), slog.LevelDebug) {
		s.logger.Debug("exchange request", "key", a.key, "nonce", nonce, "req_id", reqID, "status", status)
	}

	// Step 6.
	s.answer(w, plan, status, body)
}

// answer writes status and body after the outgoing delay.
func (s *Server) answer(w http.ResponseWriter, plan faultPlan, status int, body []byte) {
	if err := s.cfg.Sleep(s.stop, s.delay(s.cfg.OutDelay)+plan.extraDelay); err != nil {
		status, body = http.StatusServiceUnavailable, []byte(bodyClosing)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// okBody is the 200 answer, echoing reqID as sent.
func okBody(reqID string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"status":"OK","req_id":`)
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(reqID)   // a string always encodes
	b.Truncate(b.Len() - 1) // Encode's newline
	b.WriteByte('}')
	return b.Bytes()
}

// readParams returns the query string's parameters, completed by those of a form body
// sent with the GET (http.Request.ParseForm reads bodies only for POST, PUT and
// PATCH). A body that cannot be read or parsed adds what it can.
func readParams(r *http.Request) url.Values {
	q := r.URL.Query()
	if r.Body == nil || r.Body == http.NoBody {
		return q
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/x-www-form-urlencoded" {
			return q
		}
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, maxFormBody))
	form, _ := url.ParseQuery(string(b))
	for name, vs := range form {
		if _, ok := q[name]; !ok {
			q[name] = vs
		}
	}
	return q
}

// dropConn closes the request's connection without an answer. It reports false when
// the connection cannot be taken over (HTTP/2).
func dropConn(w http.ResponseWriter) bool {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// writeBody writes a JSON body that is already encoded.
func writeBody(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// errorBody is an error answer of the admin endpoints, in the API's shape.
type errorBody struct {
	Status   string `json:"status"`
	ErrorMsg string `json:"error_msg"`
}

// writeJSON writes v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
