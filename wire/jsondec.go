package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// decodePlain reads data as a request if it is in the plain form Encode writes:
// no space outside the payload, each field at most once and named in lower
// case, strings without escapes, whole numbers, no null, no empty list or map,
// nothing after the object. It reports false for anything else, which Decode
// then reads with encoding/json; what it accepts, it reads as encoding/json
// with unknown fields disallowed would (FuzzDecodePlain holds it to that). A
// request is decoded for every delivery: this path takes no reflection.
func decodePlain(data []byte) (Request, bool) {
	var r Request
	d := plainDecoder{data: data}
	seen := 0
	ok := d.object(func(key []byte) bool {
		switch string(key) {
		case "v":
			return first(&seen, fieldV) && d.int(&r.V)
		case "id":
			return first(&seen, fieldID) && d.str(&r.ID)
		case "created":
			return first(&seen, fieldCreated) && d.time(&r.Created)
		case "ttl_ms":
			return first(&seen, fieldTTL) && d.int64(&r.TTLms)
		case "payload":
			return first(&seen, fieldPayload) && d.raw(&r.Payload)
		case "replay_of":
			return first(&seen, fieldReplayOf) && d.str(&r.ReplayOf)
		case "call":
			if !first(&seen, fieldCall) {
				return false
			}
			r.Call = &Call{}
			return d.call(r.Call)
		case "weight":
			return first(&seen, fieldWeight) && d.int(&r.Weight)
		case "costs":
			return first(&seen, fieldCosts) && d.costs(&r.Costs)
		case "reply_to":
			return first(&seen, fieldReplyTo) && d.str(&r.ReplyTo)
		case "key":
			return first(&seen, fieldKey) && d.str(&r.Key)
		case "account":
			return first(&seen, fieldAccount) && d.str(&r.Account)
		case "label":
			return first(&seen, fieldLabel) && d.str(&r.Label)
		case "priority":
			return first(&seen, fieldPriority) && d.str((*string)(&r.Priority))
		case "results":
			return first(&seen, fieldResults) && d.str((*string)(&r.Results))
		}
		return false
	})
	if !ok || d.i != len(data) || r.V > Version {
		return Request{}, false
	}
	return r, true
}

// A request's fields, as bits of a set.
const (
	fieldV = 1 << iota
	fieldID
	fieldCreated
	fieldTTL
	fieldPayload
	fieldReplayOf
	fieldCall
	fieldWeight
	fieldCosts
	fieldReplyTo
	fieldKey
	fieldAccount
	fieldLabel
	fieldPriority
	fieldResults
)

// first marks bit in seen and reports whether it was not there yet: a field
// named twice goes the way of encoding/json.
func first(seen *int, bit int) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

// plainDecoder reads the plain form of decodePlain from data, at i.
type plainDecoder struct {
	data []byte
	i    int
}

// next reports whether the next byte is c, and takes it if so.
func (d *plainDecoder) next(c byte) bool {
	if d.i < len(d.data) && d.data[d.i] == c {
		d.i++
		return true
	}
	return false
}

// object reads {"key":value,...}, calling field for each key with i at its
// value; field reads the value. An empty object is refused.
func (d *plainDecoder) object(field func(key []byte) bool) bool {
	if !d.next('{') {
		return false
	}
	for {
		key, ok := d.plainString()
		if !ok || !d.next(':') || !field(key) {
			return false
		}
		if d.next('}') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// plainString reads a string without escapes or control characters, of valid
// UTF-8, and returns its bytes (within data).
func (d *plainDecoder) plainString() ([]byte, bool) {
	if !d.next('"') {
		return nil, false
	}
	start := d.i
	ascii := true
	for ; d.i < len(d.data); d.i++ {
		switch c := d.data[d.i]; {
		case c == '"':
			s := d.data[start:d.i]
			d.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (d *plainDecoder) str(dst *string) bool {
	s, ok := d.plainString()
	*dst = string(s)
	return ok
}

// time reads a string in RFC 3339, as time.Time's UnmarshalJSON does.
func (d *plainDecoder) time(dst *time.Time) bool {
	s, ok := d.plainString()
	return ok && dst.UnmarshalText(s) == nil
}

// number reads a whole number in JSON's form: an optional minus, then 0 or
// digits not starting with 0.
func (d *plainDecoder) number(bits int) (int64, bool) {
	start := d.i
	d.next('-')
	digits := d.i
	for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
		d.i++
	}
	if n := d.i - digits; n == 0 || n > 1 && d.data[digits] == '0' {
		return 0, false
	}
	v, err := strconv.ParseInt(string(d.data[start:d.i]), 10, bits)
	return v, err == nil
}

func (d *plainDecoder) int(dst *int) bool {
	v, ok := d.number(strconv.IntSize)
	*dst = int(v)
	return ok
}

func (d *plainDecoder) int64(dst *int64) bool {
	v, ok := d.number(64)
	*dst = v
	return ok
}

// raw reads any one JSON value, kept byte for byte as json.RawMessage keeps it.
func (d *plainDecoder) raw(dst *json.RawMessage) bool {
	start := d.i
	if !d.skipValue() {
		return false
	}
	v := d.data[start:d.i]
	if !json.Valid(v) {
		return false
	}
	*dst = bytes.Clone(v)
	return true
}

// skipValue moves past one JSON value, or reports false where it cannot tell
// where the value ends: then json.Valid would have refused the value anyway.
func (d *plainDecoder) skipValue() bool {
	depth := 0
	for d.i < len(d.data) {
		switch c := d.data[d.i]; c {
		case '{', '[':
			depth++
			d.i++
		case '}', ']':
			if depth == 0 {
				return false
			}
			depth--
			d.i++
		case '"':
			if !d.skipString() {
				return false
			}
		case ',', ':', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return false
			}
			d.i++
		default: // a number, true, false or null
			for d.i < len(d.data) && strings.IndexByte(",:]} \t\n\r{[\"", d.data[d.i]) < 0 {
				d.i++
			}
		}
		if depth == 0 {
			return true
		}
	}
	return false
}

// skipString moves past a JSON string, escapes and all.
func (d *plainDecoder) skipString() bool {
	for d.i++; d.i < len(d.data); d.i++ {
		switch d.data[d.i] {
		case '\\':
			d.i++
		case '"':
			d.i++
			return true
		}
	}
	return false
}

// A call's fields, as bits of a set.
const (
	fieldMethod = 1 << iota
	fieldPath
	fieldQuery
	fieldHeader
	fieldBody
	fieldContentType
)

// call reads a call: its fields as for decodePlain.
func (d *plainDecoder) call(c *Call) bool {
	seen := 0
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "method":
			return first(&seen, fieldMethod) && d.str(&c.Method)
		case "path":
			return first(&seen, fieldPath) && d.str(&c.Path)
		case "query":
			return first(&seen, fieldQuery) && d.params(&c.Query)
		case "header":
			return first(&seen, fieldHeader) && d.params(&c.Header)
		case "body":
			return first(&seen, fieldBody) && d.str(&c.Body)
		case "content_type":
			return first(&seen, fieldContentType) && d.str(&c.ContentType)
		}
		return false
	})
}

// params reads a list of at least one {"name":...,"value":...}.
func (d *plainDecoder) params(dst *[]Param) bool {
	if !d.next('[') {
		return false
	}
	for {
		var (
			p                 Param
			hasName, hasValue bool
		)
		ok := d.object(func(key []byte) bool {
			switch {
			case string(key) == "name" && !hasName:
				hasName = true
				return d.str(&p.Name)
			case string(key) == "value" && !hasValue:
				hasValue = true
				return d.str(&p.Value)
			}
			return false
		})
		if !ok {
			return false
		}
		*dst = append(*dst, p)
		if d.next(']') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// costs reads a map of at least one dimension to a whole number.
func (d *plainDecoder) costs(dst *map[string]int64) bool {
	m := map[string]int64{}
	ok := d.object(func(key []byte) bool {
		name := string(key)
		if _, dup := m[name]; dup {
			return false
		}
		v, ok := d.number(64)
		m[name] = v
		return ok
	})
	*dst = m
	return ok
}
