package producer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/ratefleet/ratefleet/wire"
)

// MaxLineBytes bounds one line of a JSON-lines input; a longer line is a bad line.
const MaxLineBytes = 4 << 20

// BadLineError reports an input line that is not a valid request. The rest of the
// input can still be read.
type BadLineError struct {
	// Input names the input, such as a file name or "stdin".
	Input string
	// Line is the 1-based line number.
	Line int
	// Err says what is wrong with the line.
	Err error
}

// Error names the input and the line, then what is wrong with it.
func (e *BadLineError) Error() string {
	return fmt.Sprintf("%s line %d: %v", e.Input, e.Line, e.Err)
}

// Unwrap returns the reason the line is bad.
func (e *BadLineError) Unwrap() error { return e.Err }

// Lines reads requests from JSON lines, one object a line, all due at once:
//
//	{"id":"order-1","ttl_ms":1500,"payload":{"symbol":"BTC"},"created":"2026-01-02T03:04:05Z"}
//
// Every field is optional: a missing id is a new UUID, a missing ttl_ms the default
// time to live, a missing created the time the line is read; payload is any JSON
// value, carried as it is. A line may name the upstream call, its weight and a
// reply subject (wire.Call; the profile's default call when left out):
//
//	{"id":"o-2","call":{"method":"POST","path":"/0/private/AddOrder","body":"pair=XBTUSD&type=buy"},"weight":2}
//
// and what it costs in what the upstream counts besides requests and weight:
//
//	{"id":"c-3","costs":{"input_tokens":1200,"output_tokens":512}}
//
// Blank lines are ignored. Other fields are an error, so a
// misspelt field is caught instead of silently defaulted.
type Lines struct {
	r     *bufio.Reader
	input string
	ttl   time.Duration
	line  int
}

// NewLines returns a source reading r; input names it in errors ("stdin", a path),
// and ttl is the time to live of a line that names none (wire.DefaultTTL when
// not positive).
func NewLines(r io.Reader, input string, ttl time.Duration) *Lines {
	return &Lines{r: bufio.NewReaderSize(r, 64<<10), input: input, ttl: wire.TTLOr(ttl)}
}

// lineRecord is what a line may hold; pointers tell a missing field from a zero one.
type lineRecord struct {
	ID      *string          `json:"id"`
	TTLms   *int64           `json:"ttl_ms"`
	Payload json.RawMessage  `json:"payload"`
	Created *time.Time       `json:"created"`
	Call    *wire.Call       `json:"call"`
	Weight  int              `json:"weight"`
	ReplyTo string           `json:"reply_to"`
	Costs   map[string]int64 `json:"costs"`

	Key      string        `json:"key"`
	Account  string        `json:"account"`
	Label    string        `json:"label"`
	Priority wire.Priority `json:"priority"`
	Results  wire.Results  `json:"results"`
}

var errLineTooLong = fmt.Errorf("longer than %d bytes", MaxLineBytes)

// Next returns the request on the next non-blank line, due at now. A line that is
// not a valid request gives a *BadLineError; the following call reads on.
func (l *Lines) Next(now time.Time) (Item, error) {
	for {
		raw, err := l.readLine()
		if err == io.EOF {
			return Item{}, io.EOF
		}
		l.line++
		if errors.Is(err, errLineTooLong) {
			return Item{}, &BadLineError{Input: l.input, Line: l.line, Err: err}
		}
		if err != nil {
			return Item{}, fmt.Errorf("read %s after line %d: %w", l.input, l.line-1, err)
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			continue
		}
		req, err := l.parse(raw, now)
		if err != nil {
			return Item{}, &BadLineError{Input: l.input, Line: l.line, Err: err}
		}
		return Item{Due: now, Request: req}, nil
	}
}

func (l *Lines) parse(raw []byte, now time.Time) (wire.Request, error) {
	if raw[0] != '{' {
		return wire.Request{}, errors.New("not a JSON object")
	}
	var rec lineRecord
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return wire.Request{}, fmt.Errorf("invalid request: %w", err)
	}
	if dec.More() {
		return wire.Request{}, errors.New("more than one JSON value on the line")
	}
	req := wire.Request{V: wire.Version, ID: uuid.NewString(), Created: now, TTLms: l.ttl.Milliseconds()}
	if rec.ID != nil {
		if *rec.ID == "" || strings.ContainsFunc(*rec.ID, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			return wire.Request{}, fmt.Errorf("id %q: must be non-empty, without spaces or control characters", *rec.ID)
		}
		req.ID = *rec.ID
	}
	if rec.TTLms != nil {
		if *rec.TTLms <= 0 {
			return wire.Request{}, fmt.Errorf("ttl_ms %d: must be positive", *rec.TTLms)
		}
		req.TTLms = *rec.TTLms
	}
	if rec.Created != nil {
		if rec.Created.IsZero() {
			return wire.Request{}, errors.New("created is the zero time")
		}
		req.Created = *rec.Created
	}
	if len(rec.Payload) > 0 && !bytes.Equal(rec.Payload, []byte("null")) {
		req.Payload = rec.Payload
	}
	req.Call, req.Weight, req.ReplyTo, req.Costs = rec.Call, rec.Weight, rec.ReplyTo, rec.Costs
	req.Key, req.Account, req.Label, req.Priority = rec.Key, rec.Account, rec.Label, rec.Priority
	req.Results = rec.Results
	req.V = req.NeededVersion()
	if err := req.Validate(); err != nil {
		return wire.Request{}, err
	}
	return req, nil
}

// readLine returns the next line without its newline. It returns io.EOF only when
// nothing is left, and errLineTooLong, having skipped the line, for a line over
// MaxLineBytes.
func (l *Lines) readLine() ([]byte, error) {
	var line []byte
	n := 0
	for {
		chunk, err := l.r.ReadSlice('\n')
		n += len(chunk)
		if n <= MaxLineBytes+1 { // +1: the newline does not count
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if err == io.EOF && n == 0 {
			return nil, io.EOF
		}
		length := n
		if err == nil {
			length-- // the newline
		}
		if length > MaxLineBytes {
			return nil, errLineTooLong
		}
		return bytes.TrimSuffix(line, []byte("\n")), nil
	}
}
