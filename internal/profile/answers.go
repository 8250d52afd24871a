package profile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/ratefleet/ratefleet/wire"
)

// Class is what an answer means.
type Class string

// The answer classes a profile may name.
const (
	Done        Class = "done"         // the final answer: give it to the caller
	RateLimited Class = "rate_limited" // the key went over the upstream's limit
	BadNonce    Class = "bad_nonce"    // a nonce arrived out of order: retry with a new one
	KeyUnusable Class = "key_unusable" // the key is refused for good
	RetryLater  Class = "retry_later"  // the upstream could not serve it now: retry
	// Gateway is not a profile's to name: an answer not in the upstream's own
	// format, which does not prove the request arrived.
	Gateway Class = "gateway"
)

var classes = []Class{Done, RateLimited, BadNonce, KeyUnusable, RetryLater}

// Answers says what the upstream's answers mean and what of them is kept.
type Answers struct {
	// OwnJSONField, when set, is a field every answer of the upstream's own
	// carries in a JSON object body. Only the upstream's own answers prove that
	// a request arrived; anything else (a proxy's error page) may come from
	// something in between. OwnJSON alone asks for a JSON body; neither takes
	// every answer as the upstream's own.
	OwnJSONField string `yaml:"own_json_field"`
	OwnJSON      bool   `yaml:"own_json"`
	// Rules are tried in order; the first whose status and body match classes
	// the answer.
	Rules []AnswerRule `yaml:"rules"`
	// Otherwise classes an answer no rule matched; retry_later when empty.
	Otherwise Class `yaml:"otherwise"`
	// KeepHeaders are the answer headers the result keeps.
	KeepHeaders []string `yaml:"keep_headers"`
	// MaxBody bounds the body the result keeps, in bytes; 64 KiB when 0.
	MaxBody int `yaml:"max_body"`
}

// AnswerRule classes the answers with one of Status whose body holds Body.
type AnswerRule struct {
	Status []int  `yaml:"status"`
	Body   string `yaml:"body"`
	Class  Class  `yaml:"class"`
}

// DefaultMaxBody is Answers.MaxBody's default.
const DefaultMaxBody = 64 << 10

// MaxMaxBody bounds Answers.MaxBody: a worker holds up to this much per request
// in flight.
const MaxMaxBody = 16 << 20

// Classify returns what an answer means and, unless it is Done, the upstream's
// error message for the log (its error_msg, error or message field, else the
// status text): a served answer's body is not searched for one.
//
// A redirect is never followed and a gateway's answer, as an answer not in the
// upstream's format, proves nothing: both are Gateway. A 429 is RateLimited
// unless a rule says otherwise, whoever sent it: a proxy's rate limit counts too.
func (p *Profile) Classify(status int, body []byte) (Class, string) {
	class, fixed := p.classify(status, body)
	switch {
	case class == Done:
		return Done, ""
	case fixed != "":
		return class, fixed
	}
	return class, message(body, status)
}

// classify returns what an answer means, and a message of its own when the
// answer's is not the one to log.
func (p *Profile) classify(status int, body []byte) (Class, string) {
	a := p.Answers
	if status >= 300 && status < 400 {
		return Gateway, fmt.Sprintf("%s: a redirect, not followed", statusText(status))
	}
	own := true
	switch {
	case a.OwnJSONField != "":
		own = hasField(body, a.OwnJSONField)
	case a.OwnJSON:
		own = json.Valid(body)
	}
	for _, r := range a.Rules {
		if slices.Contains(r.Status, status) && bytes.Contains(body, []byte(r.Body)) && (own || r.Class == RateLimited) {
			return r.Class, ""
		}
	}
	switch {
	case status == http.StatusTooManyRequests:
		return RateLimited, ""
	case !own && status >= 400 && status < 500 && status != http.StatusRequestTimeout:
		// Something in front of the upstream refused the request itself (a
		// missing endpoint, a firewall): it answered, so it passes nothing on
		// later, and sending again would be refused the same way.
		return Done, fmt.Sprintf("%s, not in the upstream's format: refused in front of it, final", statusText(status))
	case !own:
		return Gateway, fmt.Sprintf("%s, not in the upstream's format (a gateway's answer?)", statusText(status))
	case a.Otherwise != "":
		return a.Otherwise, ""
	}
	return RetryLater, ""
}

// hasField reports whether body is a JSON object with the top-level field
// name. Once the body is known to be valid JSON, its top level is walked in
// place: no object is built and no token allocated (an answer is classified for
// every request).
func hasField(body []byte, name string) bool {
	if !json.Valid(body) {
		return false
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return false
	}
	i++
	for {
		i = skipSpace(body, i)
		if body[i] == '}' {
			return false
		}
		end := stringEnd(body, i)
		if keyIs(body[i:end], name) {
			return true
		}
		i = skipSpace(body, end) // at the colon
		i = valueEnd(body, skipSpace(body, i+1))
		i = skipSpace(body, i)
		if body[i] != ',' {
			return false // the object's end
		}
		i++
	}
}

// keyIs reports whether the JSON string quoted (quotes included) reads name.
func keyIs(quoted []byte, name string) bool {
	raw := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(raw, '\\') < 0 && isASCII(raw) {
		return string(raw) == name
	}
	var key string // escapes, or bytes that decode as something else
	return json.Unmarshal(quoted, &key) == nil && key == name
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// The walkers below read valid JSON only (hasField checks it first).

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at i.
func stringEnd(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// valueEnd returns the index just past the value that starts at i.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// MaxBody returns the body size a result keeps.
func (p *Profile) MaxBody() int {
	if p.Answers.MaxBody > 0 {
		return p.Answers.MaxBody
	}
	return DefaultMaxBody
}

// message finds the error message of an answer.
func message(body []byte, status int) string {
	var b map[string]any
	if json.Unmarshal(body, &b) == nil {
		for _, f := range []string{"error_msg", "error", "message"} {
			switch v := b[f].(type) {
			case string:
				if v != "" {
					return v
				}
			case map[string]any:
				if m, ok := v["message"].(string); ok {
					return m
				}
			case []any:
				if len(v) > 0 {
					return fmt.Sprint(v...)
				}
			}
		}
	}
	return http.StatusText(status)
}

func (a *Answers) validate(v *validator) {
	for i, r := range a.Rules {
		if len(r.Status) == 0 {
			v.addf(fmt.Sprintf("answers.rules[%d].status", i), "must list at least one status")
		}
		for _, s := range r.Status {
			if s < 100 || s > 599 || (s >= 300 && s < 400) {
				v.addf(fmt.Sprintf("answers.rules[%d].status", i), "%d: a status from 100 to 599, not a redirect (redirects are never followed)", s)
			}
		}
		if !slices.Contains(classes, r.Class) {
			v.addf(fmt.Sprintf("answers.rules[%d].class", i), "is %q; use done, rate_limited, bad_nonce, key_unusable or retry_later", r.Class)
		}
	}
	if a.Otherwise != "" && !slices.Contains(classes, a.Otherwise) {
		v.addf("answers.otherwise", "is %q; use done, rate_limited, bad_nonce, key_unusable or retry_later", a.Otherwise)
	}
	for i, h := range a.KeepHeaders {
		if !wire.ValidHeaderName(h) {
			v.addf(fmt.Sprintf("answers.keep_headers[%d]", i), "%q must be a header name, an RFC 7230 token", h)
		}
	}
	if a.MaxBody < 0 || a.MaxBody > MaxMaxBody {
		v.addf("answers.max_body", "%d must be from 0 (64 KiB) to %d bytes (an answer too large for a result message travels in parts)", a.MaxBody, MaxMaxBody)
	}
}
