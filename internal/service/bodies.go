package service

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/wire"
)

// The fields each body may hold, for the error that refuses any other.
const (
	submitFields = "id, ttl_ms, call, weight, payload"
	doFields     = submitFields + ", timeout_ms"
	awaitFields  = "id, timeout_ms"
)

// submitBody is a request to submit, named as in the wire request record;
// pointers tell a missing field from a zero one.
type submitBody struct {
	ID      *string         `json:"id"`
	TTLms   *int64          `json:"ttl_ms"`
	Call    *wire.Call      `json:"call"`
	Weight  *int            `json:"weight"`
	Payload json.RawMessage `json:"payload"`
}

// doBody is a request to submit and the time to wait for its result. It repeats
// submitBody's fields rather than embed it, so that errors name a field as the
// caller wrote it ("ttl_ms", not "submitBody.ttl_ms").
type doBody struct {
	ID        *string         `json:"id"`
	TTLms     *int64          `json:"ttl_ms"`
	Call      *wire.Call      `json:"call"`
	Weight    *int            `json:"weight"`
	Payload   json.RawMessage `json:"payload"`
	TimeoutMS *int64          `json:"timeout_ms"`
}

func (b doBody) submit() submitBody {
	return submitBody{ID: b.ID, TTLms: b.TTLms, Call: b.Call, Weight: b.Weight, Payload: b.Payload}
}

// awaitBody names the request whose result to wait for.
type awaitBody struct {
	ID        *string `json:"id"`
	TimeoutMS *int64  `json:"timeout_ms"`
}

// decode reads body into v, one JSON object with no field but those of fields.
// Its errors name the field at fault.
func decode(body []byte, v any, fields string) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return fmt.Errorf("the body must be a JSON object with the fields %s", fields)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case err == nil && dec.More():
		return errors.New("the body holds more than one JSON value")
	case err == nil:
		return nil
	case errors.As(err, &syntax):
		return fmt.Errorf("the body is not valid JSON (at byte %d: %v)", syntax.Offset, syntax)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Errorf("%s: want %s, not a JSON %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("%s: not a field of this body, which may hold %s", strings.TrimPrefix(err.Error(), "json: unknown field "), fields)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("the body is not valid JSON (it ends too soon)")
	}
	return fmt.Errorf("the body is not valid JSON: %v", err)
}

// jsonKind names a Go kind as the JSON value it is read from.
func jsonKind(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "string":
		return "a string"
	case kind == "bool":
		return "true or false"
	case kind == "slice", kind == "array":
		return "an array"
	}
	return "an object"
}

// request checks the body and returns the request it asks for, with a new id
// when it names none (so that every answer can name the request).
func (b submitBody) request() (client.Request, error) {
	r := client.Request{ID: uuid.NewString(), Call: b.Call}
	if b.ID != nil {
		if *b.ID == "" || strings.ContainsFunc(*b.ID, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }) {
			return r, fmt.Errorf("id %q: must be non-empty, without spaces or control characters (or left out for a new one)", *b.ID)
		}
		r.ID = *b.ID
	}
	if b.TTLms != nil {
		if *b.TTLms <= 0 {
			return r, fmt.Errorf("ttl_ms %d: must be positive (or left out for %s)", *b.TTLms, wire.DefaultTTL)
		}
		r.TTL = time.Duration(*b.TTLms) * time.Millisecond
	}
	if err := wire.CheckTTL(wire.TTLOr(r.TTL)); err != nil {
		return r, fmt.Errorf("ttl_ms: %w", err)
	}
	if b.Weight != nil {
		if err := wire.CheckWeight(*b.Weight); err != nil {
			return r, err
		}
		r.Weight = *b.Weight
	}
	if b.Call != nil {
		if err := b.Call.Validate(); err != nil {
			return r, err
		}
	}
	if len(b.Payload) > 0 && !bytes.Equal(b.Payload, []byte("null")) {
		r.Payload = b.Payload
	}
	return r, nil
}

// timeoutOf returns the wait a body's timeout_ms asks for.
func timeoutOf(ms *int64) (time.Duration, error) {
	if ms == nil {
		return DefaultTimeout, nil
	}
	if *ms <= 0 || *ms > MaxTimeout.Milliseconds() {
		return 0, fmt.Errorf("timeout_ms %d: must be from 1 to %d (or left out for %d)", *ms, MaxTimeout.Milliseconds(), DefaultTimeout.Milliseconds())
	}
	return time.Duration(*ms) * time.Millisecond, nil
}
