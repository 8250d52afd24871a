package exchange

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

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
	p := readParams(r)
	apiKey := p.Get("api_key")
	s.serve(w, r, refCall{
		a: s.bySecret[apiKey], apiKey: apiKey, nonce: p.Get("nonce"), reqID: p.Get("req_id"),
		cost: s.costs.of(http.MethodGet, "/api/request"),
	})
}

// refCall is one call of the reference's shape, whichever endpoint it came to.
type refCall struct {
	a      *account // nil: an unknown key
	apiKey string   // as sent, to name an unknown key by its fingerprint
	nonce  string
	reqID  string
	cost   Cost // from the cost table
}

// serve answers a call of the reference's shape: the faults, then the rules' steps,
// with the model's ban and rules (limits.go) beside the key's ring.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, c refCall) {
	plan := s.faults.plan(s.cfg.Now(), s.uniform)
	if plan.down {
		s.faultCount.Add(1)
		if plan.drop && dropConn(w) {
			return
		}
		writeBody(w, plan.status, bodyFault)
		return
	}

	// Step 1: an unknown key gets only the outgoing delay.
	a := c.a
	if a == nil {
		s.unknownKey.Add(1)
		if s.logger.Enabled(r.Context(), slog.LevelDebug) {
			// The fingerprint tells which key a client sent without showing it.
			s.logger.Debug("exchange unknown api key", "fp", keys.New("", c.apiKey).Fingerprint())
		}
		status, body := s.format.invalidKey()
		s.answer(w, plan, status, body)
		return
	}

	if plan.spike {
		s.spikes.Add(1)
	}
	// Step 2: the incoming delay; the arrival time is read in judge, under the key's
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
	d := s.judge(a, callCost{cost: c.cost}, c.nonce, !s.cfg.NoNonce)
	s.logDecision(a, d)
	if d.v == verdictOK {
		s.ids.record(c.reqID, s.cfg.Now())
	}
	status, body := s.format.answer(d.v, c.reqID)
	s.retryAfter(w.Header(), d)
	if plan.inject {
		s.faultCount.Add(1)
		status, body = plan.status, []byte(bodyFault)
	}
	if s.logger.Enabled(r.Context(), slog.LevelDebug) {
		s.logger.Debug("exchange request", "key", a.key, "nonce", c.nonce, "req_id", c.reqID, "status", status)
	}

	// Step 6.
	s.answerThen(w, plan, func(h http.Header) (int, []byte) {
		if d.v != verdictBanned {
			s.writeUsage(h, a, c.cost)
		}
		return status, body
	})
}

// logDecision logs what a decision changed for good: a key blocked, a ban begun.
func (s *Server) logDecision(a *account, d decision) {
	if d.blockedNow {
		s.logger.Warn("exchange key blocked until restart", "key", a.key, "rejections", s.cfg.BlockAfter)
	}
	if d.banFor > 0 {
		s.logger.Warn("exchange bans every key (the whole upstream: one IP)", "for", d.banFor)
	}
}

// retryAfter tells, on an answer of the model's rules (not of the reference's ring
// alone), when to come back: the whole seconds until the rules that refused the call
// have room, or until the ban ends.
func (s *Server) retryAfter(h http.Header, d decision) {
	if s.limits == nil || (d.v != verdictRateLimited && d.v != verdictBanned) {
		return
	}
	h.Set("Retry-After", strconv.Itoa(seconds(d.wait)))
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// answer writes status and body after the outgoing delay.
func (s *Server) answer(w http.ResponseWriter, plan faultPlan, status int, body []byte) {
	s.answerThen(w, plan, func(http.Header) (int, []byte) { return status, body })
}

// answerThen waits the outgoing delay, then writes the answer finish gives: what is
// known only once answered (a call's output tokens, the usage then) is counted
// there.
func (s *Server) answerThen(w http.ResponseWriter, plan faultPlan, finish func(http.Header) (int, []byte)) {
	status, body := http.StatusServiceUnavailable, []byte(bodyClosing)
	if err := s.cfg.Sleep(s.stop, s.delay(s.cfg.OutDelay)+plan.extraDelay); err == nil {
		status, body = finish(w.Header())
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
	if r.Body == nil || r.Body == http.NoBody {
		return r.URL.Query()
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, maxFormBody))
	return params(r, b)
}

// params returns the query string's parameters, completed by those of body when it
// is a form (or has no content type).
func params(r *http.Request, body []byte) url.Values {
	q := r.URL.Query()
	if len(body) == 0 {
		return q
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/x-www-form-urlencoded" {
			return q
		}
	}
	form, _ := url.ParseQuery(string(body))
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
