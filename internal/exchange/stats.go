package exchange

import (
	"net/http"
	"strconv"
	"time"
)

// Stats is the server's view of what it was asked and what it answered, since it
// started or since the last POST /admin/reset-stats. GET /stats answers its JSON form.
// Keys are named by name and fingerprint only: Stats never holds a secret.
type Stats struct {
	// Limit, WindowMS and BlockAfter are the rules in force, to read the counts by.
	Limit      int   `json:"limit"`
	WindowMS   int64 `json:"window_ms"`
	BlockAfter int   `json:"block_after"`
	// Keys has one entry per key, in Config.Keys order.
	Keys []KeyStats `json:"keys"`
	// OK is the number of requests that passed every check, summed over the keys.
	OK uint64 `json:"ok"`
	// UnknownKey is the number of 401 answers.
	UnknownKey uint64 `json:"unknown_key"`
	// Faults is the number of requests answered or dropped by an injected fault.
	Faults uint64 `json:"faults"`
	// Spikes is the number of known keys' requests whose incoming delay a spike
	// lengthened (spike_share).
	Spikes uint64 `json:"spikes"`
	// DistinctIDs is the number of distinct req_ids that passed every check.
	DistinctIDs int `json:"distinct_ids"`
	// Duplicates is the number of req_ids that passed every check more than once.
	Duplicates int `json:"duplicates"`
	// UntrackedIDs counts requests that passed every check when the id set was full
	// (Config.MaxIDs): their ids are in neither count above.
	UntrackedIDs uint64 `json:"untracked_ids"`
	// IDs and DuplicateIDs list, sorted, the ids behind DistinctIDs and Duplicates.
	// Only GET /stats?ids=1 fills them; Server.IDCounts gives the same.
	IDs          []string `json:"ids,omitempty"`
	DuplicateIDs []string `json:"duplicate_ids,omitempty"`
	// DuplicateTimes gives, with ?ids=1, when each id in DuplicateIDs was done.
	DuplicateTimes map[string][]time.Time `json:"duplicate_times,omitempty"`

	// Model names the model the rules follow (Config.Model), "" for the reference.
	Model string `json:"model,omitempty"`
	// RunMS is how long the run has lasted: since the server started or the
	// stats were last reset. The rules' bounds are over this span.
	RunMS int64 `json:"run_ms"`
	// RateLimited is the number of rate-limit rejections of every key: the 429s of
	// the ring and the rules (in the Kraken format, 200s with EAPI:Rate limit
	// exceeded). The keys' BlockedAnswers are not in it.
	RateLimited uint64 `json:"rate_limited"`
	// Banned is the number of 418 answers given while the upstream's ban was on,
	// and Bans the number of bans begun (Config.Ban).
	Banned uint64 `json:"banned,omitempty"`
	Bans   int    `json:"bans,omitempty"`
	// Rules has one entry per Config.Rules, in order.
	Rules []RuleStats `json:"rules,omitempty"`
}

// KeyStats is one key's part of Stats.
type KeyStats struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"` // first 8 hex digits of the secret's SHA-256
	// Accepted is the number of requests the rate limit accepted (step 4): they
	// entered the ring, whatever their nonce. Accepted = OK + BadNonce.
	Accepted uint64 `json:"accepted"`
	// OK is the number of requests that passed every check: answered 200, unless an
	// error_after fault replaced the answer.
	OK uint64 `json:"ok"`
	// RateLimited is the number of 429 "exceeded rate limit" answers (step 4).
	RateLimited uint64 `json:"rate_limited"`
	// BadNonce is the number of 400 answers (step 5).
	BadNonce uint64 `json:"bad_nonce"`
	// BlockedAnswers is the number of 429 "blocked" answers (step 3).
	BlockedAnswers uint64 `json:"blocked_answers"`
	// Rejections is the key's rate-limit rejections in the server's lifetime: the
	// key is blocked when it reaches BlockAfter. A stats reset leaves it.
	Rejections int `json:"rejections"`
	// Blocked tells whether the key is blocked for the server's lifetime.
	Blocked bool `json:"blocked"`
	// MaxInWindow is the largest number of accepted arrivals seen in one span
	// [t−Window, t] of Window+1 ms: the rule keeps it at most Limit.
	MaxInWindow int `json:"max_in_window"`
	// LastNonce is the key's last accepted nonce.
	LastNonce int64 `json:"last_nonce"`
	// Account is the key's account, when Config.Accounts is set.
	Account string `json:"account,omitempty"`
	// Outside is the number of the outside client's calls counted on this key
	// (Config.Outside); they are in no other count.
	Outside uint64 `json:"outside,omitempty"`
}

// Stats returns the server's counters now. Its IDs and DuplicateIDs are empty.
func (s *Server) Stats() Stats {
	st := Stats{
		Keys:       make([]KeyStats, len(s.accounts)),
		UnknownKey: s.unknownKey.Load(),
		Faults:     s.faultCount.Load(),
		Spikes:     s.spikes.Load(),
		Limit:      s.cfg.Limit,
		WindowMS:   s.cfg.Window.Milliseconds(),
		BlockAfter: s.cfg.BlockAfter,
	}
	st.Model = s.cfg.Model
	st.RunMS, st.Banned, st.Bans, st.Rules = s.ruleStats()
	for i, a := range s.accounts {
		st.Keys[i] = a.stats()
		st.OK += st.Keys[i].OK
		st.RateLimited += st.Keys[i].RateLimited
	}
	st.DistinctIDs, st.Duplicates, st.UntrackedIDs = s.ids.totals()
	return st
}

// IDCounts returns how many times each req_id passed every check (see Stats).
func (s *Server) IDCounts() map[string]int { return s.ids.counts() }

// ResetStats zeroes the counters and the id set. The rules' state (rings, rejections,
// blocks, last nonces) stays.
func (s *Server) ResetStats() {
	for _, a := range s.accounts {
		a.resetCounts()
	}
	s.unknownKey.Store(0)
	s.faultCount.Store(0)
	s.spikes.Store(0)
	s.ids.reset()
	s.resetRuleStats()
}

// handleStats answers GET /stats; ?ids=1 adds the id lists.
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	st := s.Stats()
	if withIDs, _ := strconv.ParseBool(r.URL.Query().Get("ids")); withIDs {
		st.IDs, st.DuplicateIDs = s.ids.lists()
		st.DuplicateTimes = s.ids.duplicateTimes()
	}
	writeJSON(w, http.StatusOK, st)
}

// handleResetStats answers POST /admin/reset-stats.
func (s *Server) handleResetStats(w http.ResponseWriter, _ *http.Request) {
	s.ResetStats()
	writeJSON(w, http.StatusOK, map[string]string{"status": "OK"})
}
