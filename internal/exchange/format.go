package exchange

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
)

// Format is the body format of the answers of the reference-shaped endpoints
// (GET /api/request, POST /api/private and the cost table's paths): Config.Format.
// The LLM endpoint keeps its own; the simulator's own answers (injected faults,
// closing, 405) keep the reference's.
type Format string

// The answer formats.
const (
	// FormatReference is the reference's: {"status":"OK","req_id":..} or
	// {"status":"error","error_msg":..}, with the rules' HTTP statuses.
	FormatReference Format = ""
	// FormatKraken is Kraken's: {"error":[],"result":{"req_id":..}} or
	// {"error":["EAPI:Rate limit exceeded"]}, with no status field, and HTTP 200 for
	// every error of the API itself, as Kraken answers (its status codes other than
	// 200 say only that a request did not reach it): an invalid key, signature or
	// nonce, a rate limit, a blocked key. A ban stays a 418.
	FormatKraken Format = "kraken"
)

// ParseFormat reads a format's name: reference (or empty) or kraken.
func ParseFormat(name string) (Format, error) {
	switch name {
	case "", "reference":
		return FormatReference, nil
	case string(FormatKraken):
		return FormatKraken, nil
	}
	return "", fmt.Errorf("format %q: use reference or kraken", name)
}

// The ban's answer, in the reference's shape.
const bodyBanned = `{"status":"error","error_msg":"banned: too many rate limit errors from this IP"}`

// krakenErrors are Kraken's messages for the reference's errors.
var krakenErrors = map[verdict]string{
	verdictBlocked:     "EGeneral:Temporary lockout",
	verdictRateLimited: "EAPI:Rate limit exceeded",
	verdictBadNonce:    "EAPI:Invalid nonce",
	verdictBanned:      "EGeneral:Too many requests",
}

// answer returns the status and body that answer a verdict.
func (f Format) answer(v verdict, reqID string) (int, []byte) {
	if f == FormatKraken {
		if v == verdictOK {
			return http.StatusOK, krakenOK(reqID)
		}
		status := http.StatusOK
		if v == verdictBanned {
			status = http.StatusTeapot
		}
		return status, krakenError(krakenErrors[v])
	}
	switch v {
	case verdictBlocked:
		return http.StatusTooManyRequests, []byte(bodyBlocked)
	case verdictRateLimited:
		return http.StatusTooManyRequests, []byte(bodyRateLimited)
	case verdictBadNonce:
		return http.StatusBadRequest, []byte(bodyBadNonce)
	case verdictBanned:
		return http.StatusTeapot, []byte(bodyBanned)
	}
	return http.StatusOK, okBody(reqID)
}

// invalidKey answers an unknown API key.
func (f Format) invalidKey() (int, []byte) {
	if f == FormatKraken {
		return http.StatusOK, krakenError("EAPI:Invalid key")
	}
	return http.StatusUnauthorized, []byte(bodyInvalidKey)
}

// badSignature answers a signed request whose key id or signature is wrong.
func (f Format) badSignature() (int, []byte) {
	if f == FormatKraken {
		return http.StatusOK, krakenError("EAPI:Invalid signature")
	}
	return http.StatusUnauthorized, []byte(bodyBadSignature)
}

func krakenError(msg string) []byte {
	b, _ := json.Marshal(map[string][]string{"error": {msg}})
	return b
}

func krakenOK(reqID string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(map[string]any{"error": []string{}, "result": map[string]string{"req_id": reqID}})
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
