package profile

// SignedYAML is the profile of the simulator's signed mode (internal/exchange),
// which signs as Kraken's private API does: POST, the nonce first in a form body,
// the public key in API-Key, and API-Sign the base64 HMAC-SHA512, keyed by the
// base64-decoded secret, of the path and the SHA-256 of nonce and body.
const SignedYAML = `# A signed exchange API (the simulator's signed mode; Kraken's scheme).
version: 1
name: signed
base_url: http://127.0.0.1:8080
default_call: {method: POST, path: /api/private}
calls:                               # the only call a request may make
  - {method: POST, path: /api/private}
request_id: {in: form, name: req_id}
key: {in: header, name: API-Key}
nonce: {in: form, name: nonce}
sign:
  algorithm: hmac-sha512
  secret: base64                     # the keys file holds the secret in base64
  message: [path, sha256(nonce body)]
  output: base64
  in: header
  name: API-Sign
rate:
  rules: [{limit: 20, window: 1s}]
  max_delay: 50ms
  ban_after: 10
answers:
  own_json_field: status
  rules:
    - {status: [200], class: done}
    - {status: [429], body: blocked, class: key_unusable}
    - {status: [429], class: rate_limited}
    - {status: [400], body: nonce, class: bad_nonce}
    - {status: [401, 403], class: key_unusable}
  otherwise: retry_later
  keep_headers: [Content-Type]
  max_body: 65536
`

// PerMinuteYAML is the profile of the simulator's per-minute mode, shaped like
// an LLM API: a bearer key, no nonce, a requests-per-minute limit, 429s with
// Retry-After that never cost the key.
const PerMinuteYAML = `# An LLM-style API (the simulator's per-minute mode).
version: 1
name: per-minute
base_url: http://127.0.0.1:8080
default_call: {method: POST, path: /v1/complete, body: '{"prompt":"hello"}', content_type: application/json}
calls:
  - {method: POST, path: /v1/complete}
request_id: {in: header, name: X-Request-Id}
key: {in: bearer}
rate:
  rules: [{limit: 60, window: 1m}]
  max_delay: 50ms
  ban_after: 0                       # a 429 costs a pause, never the key
  trust_retry_after: true            # the pause is the 429's Retry-After, not the whole minute
answers:
  own_json: true
  rules:
    - {status: [200], class: done}
    - {status: [401, 403], class: key_unusable}
    - {status: [400, 404, 422], class: done}   # the caller's mistake: final, given back
  otherwise: retry_later
  keep_headers: [Content-Type, Retry-After]
  max_body: 65536
`

// Signature returns the signature the profile puts on a request with these
// parts, as Build does; an upstream (the simulator) checks a request with it.
func (p *Profile) Signature(secret, method, path, query, body, nonce, timestamp string) (string, error) {
	if p.Sign == nil {
		return "", nil
	}
	return p.Sign.signature(secret, parts{method: method, path: path, query: query, body: body, nonce: nonce, timestamp: timestamp})
}
