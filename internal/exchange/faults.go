package exchange

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Faults are failures the server injects on purpose, to test how clients live with an
// upstream that errs, slows down or goes away. The zero value injects none. In JSON
// (the admin endpoint's shape) durations are whole milliseconds; see the package doc.
type Faults struct {
	// ErrorRate is the share, from 0 to 1, of requests of known keys that get an
	// injected error, drawn per request.
	ErrorRate float64
	// ErrorStatus is the 5xx status of injected errors and of a down server; 0 means
	// 503.
	ErrorStatus int
	// ErrorAfter makes an injected error replace only the answer: the request is
	// checked and done first (rate slot, nonce, req_id), so the client cannot tell
	// whether it took effect. Otherwise the error replaces the request before its
	// checks and nothing is done.
	ErrorAfter bool
	// ExtraDelay is added to the outgoing delay of every answer.
	ExtraDelay time.Duration
	// ExtraInDelay is added to the incoming delay of known keys' requests, so that
	// requests arrive later than the rules' delays allow for.
	ExtraInDelay time.Duration
	// SpikeShare is the share, from 0 to 1, of known keys' requests, drawn per
	// request, whose incoming delay SpikeDelay lengthens: isolated late arrivals.
	SpikeShare float64
	SpikeDelay time.Duration
	// DownFor is how long the server is down from the moment the faults are set.
	// While down, every request is answered the error status at once.
	DownFor time.Duration
	// DownDrop closes connections without an answer while down.
	DownDrop bool
}

// ErrInvalidFaults is wrapped by the error for Faults that cannot be set.
var ErrInvalidFaults = errors.New("invalid faults")

func (f Faults) validate() error {
	switch {
	case !(f.ErrorRate >= 0 && f.ErrorRate <= 1):
		return fmt.Errorf("%w: error_rate %v must be from 0 to 1", ErrInvalidFaults, f.ErrorRate)
	case f.ErrorStatus != 0 && (f.ErrorStatus < 500 || f.ErrorStatus > 599):
		return fmt.Errorf("%w: error_status %d must be a 5xx status (or 0 for 503)", ErrInvalidFaults, f.ErrorStatus)
	case !(f.SpikeShare >= 0 && f.SpikeShare <= 1):
		return fmt.Errorf("%w: spike_share %v must be from 0 to 1", ErrInvalidFaults, f.SpikeShare)
	case f.ExtraDelay < 0 || f.ExtraInDelay < 0 || f.SpikeDelay < 0 || f.DownFor < 0:
		return fmt.Errorf("%w: extra_delay_ms, extra_in_delay_ms, spike_delay_ms and down_for_ms must be at least 0", ErrInvalidFaults)
	}
	return nil
}

func (f Faults) status() int {
	if f.ErrorStatus == 0 {
		return http.StatusServiceUnavailable
	}
	return f.ErrorStatus
}

// faultsJSON is the wire form of Faults.
type faultsJSON struct {
	ErrorRate      float64 `json:"error_rate"`
	ErrorStatus    int     `json:"error_status"`
	ErrorAfter     bool    `json:"error_after"`
	ExtraDelayMS   int64   `json:"extra_delay_ms"`
	ExtraInDelayMS int64   `json:"extra_in_delay_ms"`
	SpikeShare     float64 `json:"spike_share"`
	SpikeDelayMS   int64   `json:"spike_delay_ms"`
	DownForMS      int64   `json:"down_for_ms"`
	DownDrop       bool    `json:"down_drop"`
}

// MarshalJSON writes f in the admin endpoint's shape, durations in milliseconds.
func (f Faults) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultsJSON{
		ErrorRate:      f.ErrorRate,
		ErrorStatus:    f.status(),
		ErrorAfter:     f.ErrorAfter,
		ExtraDelayMS:   f.ExtraDelay.Milliseconds(),
		ExtraInDelayMS: f.ExtraInDelay.Milliseconds(),
		SpikeShare:     f.SpikeShare,
		SpikeDelayMS:   f.SpikeDelay.Milliseconds(),
		DownForMS:      f.DownFor.Milliseconds(),
		DownDrop:       f.DownDrop,
	})
}

// UnmarshalJSON reads the admin endpoint's shape onto f: fields the JSON leaves out
// keep their value, and unknown fields are an error.
func (f *Faults) UnmarshalJSON(b []byte) error {
	w := faultsJSON{
		ErrorRate:      f.ErrorRate,
		ErrorStatus:    f.ErrorStatus,
		ErrorAfter:     f.ErrorAfter,
		ExtraDelayMS:   f.ExtraDelay.Milliseconds(),
		ExtraInDelayMS: f.ExtraInDelay.Milliseconds(),
		SpikeShare:     f.SpikeShare,
		SpikeDelayMS:   f.SpikeDelay.Milliseconds(),
		DownForMS:      f.DownFor.Milliseconds(),
		DownDrop:       f.DownDrop,
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidFaults, err)
	}
	*f = Faults{
		ErrorRate:    w.ErrorRate,
		ErrorStatus:  w.ErrorStatus,
		ErrorAfter:   w.ErrorAfter,
		ExtraDelay:   time.Duration(w.ExtraDelayMS) * time.Millisecond,
		ExtraInDelay: time.Duration(w.ExtraInDelayMS) * time.Millisecond,
		SpikeShare:   w.SpikeShare,
		SpikeDelay:   time.Duration(w.SpikeDelayMS) * time.Millisecond,
		DownFor:      time.Duration(w.DownForMS) * time.Millisecond,
		DownDrop:     w.DownDrop,
	}
	return nil
}

// faultState holds the faults in force. A down period is kept as its end, so that it
// runs on the server's clock.
type faultState struct {
	mu        sync.Mutex
	f         Faults // DownFor unused: downUntil holds it
	downUntil time.Time
}

func (s *faultState) set(f Faults, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f, s.downUntil = f, now.Add(f.DownFor)
}

func (s *faultState) get(now time.Time) Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.f
	f.DownFor = max(0, s.downUntil.Sub(now))
	return f
}

// faultPlan is what the faults do to one request.
type faultPlan struct {
	down       bool // answer status at once, or drop the connection
	drop       bool
	inject     bool // answer status instead of the request's answer
	after      bool // inject only after the request was checked and done
	status     int
	extraIn    time.Duration
	extraDelay time.Duration
	spike      bool // extraIn holds a spike
}

// plan decides the faults for a request received at now; draw gives a uniform number
// in [0, 1) and is called only when an error may be injected.
func (s *faultState) plan(now time.Time, draw func() float64) faultPlan {
	s.mu.Lock()
	f, down := s.f, now.Before(s.downUntil)
	s.mu.Unlock()
	p := faultPlan{
		down:       down,
		drop:       down && f.DownDrop,
		after:      f.ErrorAfter,
		status:     f.status(),
		extraIn:    f.ExtraInDelay,
		extraDelay: f.ExtraDelay,
	}
	if !down && f.ErrorRate > 0 {
		p.inject = draw() < f.ErrorRate
	}
	if !down && f.SpikeShare > 0 && draw() < f.SpikeShare {
		p.extraIn += f.SpikeDelay
		p.spike = true
	}
	return p
}

// handleGetFaults answers GET /admin/faults.
func (s *Server) handleGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Faults())
}

// handleSetFaults answers POST /admin/faults: the body's fields change the faults in
// force, the others keep their value.
func (s *Server) handleSetFaults(w http.ResponseWriter, r *http.Request) {
	f := s.Faults()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBody))
	if err == nil {
		if err = json.Unmarshal(body, &f); err != nil && !errors.Is(err, ErrInvalidFaults) {
			err = fmt.Errorf("%w: want a JSON object: %w", ErrInvalidFaults, err)
		}
	}
	if err == nil {
		err = s.SetFaults(f)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Status: "error", ErrorMsg: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, s.Faults())
}

// handleClearFaults answers DELETE /admin/faults.
func (s *Server) handleClearFaults(w http.ResponseWriter, _ *http.Request) {
	_ = s.SetFaults(Faults{}) // no faults is always valid
	writeJSON(w, http.StatusOK, s.Faults())
}
