package exchange

import (
	"strconv"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/internal/keys"
)

// verdict is the rules' answer to one request of a known key (steps 3 to 5).
type verdict int

const (
	verdictOK          verdict = iota // passed every check
	verdictBlocked                    // step 3: the key is blocked
	verdictRateLimited                // step 4: rejected by the rate limit
	verdictBadNonce                   // step 5: accepted by the rate limit, bad nonce
	verdictBanned                     // the upstream's ban is in force (Config.Ban)
)

// account is one key's state. The rule state lives as long as the server; the
// counters are zeroed by POST /admin/reset-stats.
type account struct {
	key        keys.Key // set once
	window     int64    // Config.Window in ms
	blockAfter int
	label      string    // the account (group of keys) of rules of scope account
	counters   []counter // the counter of each of Config.Rules the key falls under

	mu sync.Mutex
	// ring holds the arrival times, in Unix ms, of the last len(ring) accepted
	// requests; ring[next] is the oldest, the Limit-th previous accepted arrival.
	// It is empty when Limit is 0: the key has no ring.
	ring []int64
	next int
	// recent is how many of the newest ring entries lie in [last−window, last],
	// where last is the newest accepted arrival.
	recent     int
	rejections int // step 4 rejections in the server's lifetime
	lastNonce  int64
	counts     keyCounts
}

// keyCounts are one key's counters.
type keyCounts struct {
	accepted, ok, rateLimited, blockedAnswers, badNonce, outside uint64
	maxInWindow                                                  int
}

func newAccount(k keys.Key, limit int, window time.Duration, blockAfter int) *account {
	return &account{key: k, ring: make([]int64, limit), window: window.Milliseconds(), blockAfter: blockAfter}
}

// decide applies steps 3 to 5 to a request arriving at t (Unix ms). a.mu must be held.
func (a *account) decide(t int64, nonce string) (v verdict, blockedNow bool) {
	v, blockedNow, _ = a.decideWith(t, nonce, true, nil)
	return v, blockedNow
}

// decideWith applies steps 3 to 5 to a request arriving at t (Unix ms); step 5 only
// when checkNonce. The model's rules, when g is not nil, are asked after the ring and
// charged only when both admit the request. A rejection also says how long until
// what refused it has room. a.mu must be held.
func (a *account) decideWith(t int64, nonce string, checkNonce bool, g *ruleGate) (v verdict, blockedNow bool, wait time.Duration) {
	if a.blocked() {
		a.counts.blockedAnswers++
		return verdictBlocked, false, 0
	}
	ok := !a.ringFull(t)
	if !ok {
		wait = time.Duration(a.ring[a.next]+a.window+1-t) * time.Millisecond
	} else if g != nil {
		ok, wait = g.room(t)
	}
	if !ok {
		a.rejections++
		a.counts.rateLimited++
		if g != nil {
			g.rejected(t)
		}
		return verdictRateLimited, a.blocked(), wait
	}
	a.accept(t)
	a.counts.accepted++
	if g != nil {
		g.charge(t)
	}
	if checkNonce {
		n, err := strconv.ParseInt(nonce, 10, 64)
		if err != nil || n <= a.lastNonce {
			a.counts.badNonce++
			return verdictBadNonce, false, 0
		}
		a.lastNonce = n
	}
	a.counts.ok++
	return verdictOK, false, 0
}

// ringFull reports whether the key's ring refuses an arrival at t: its Limit-th
// previous accepted arrival is not more than Window before t.
func (a *account) ringFull(t int64) bool {
	return len(a.ring) > 0 && t-a.ring[a.next] <= a.window
}

func (a *account) blocked() bool {
	return a.blockAfter > 0 && a.rejections >= a.blockAfter
}

// accept puts arrival t in the ring and updates the largest number of accepted
// arrivals seen in one span [t−window, t]. The rule keeps that number at most
// len(ring): t was accepted because the entry it overwrites is older than t−window.
func (a *account) accept(t int64) {
	n := len(a.ring)
	if n == 0 {
		return
	}
	if a.recent == n {
		a.recent-- // the entry about to be overwritten is older than t−window
	}
	a.ring[a.next] = t
	a.next = (a.next + 1) % n
	a.recent++
	// The counted entries are the newest `recent` ones; drop the oldest while they
	// fall before the span. Each entry is dropped once, so this is O(1) amortized.
	for a.recent > 1 && a.ring[(a.next-a.recent+n)%n] < t-a.window {
		a.recent--
	}
	a.counts.maxInWindow = max(a.counts.maxInWindow, a.recent)
}

// stats returns the key's counters and state.
func (a *account) stats() KeyStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return KeyStats{
		Name:           a.key.Name(),
		Fingerprint:    a.key.Fingerprint(),
		Accepted:       a.counts.accepted,
		OK:             a.counts.ok,
		RateLimited:    a.counts.rateLimited,
		BadNonce:       a.counts.badNonce,
		BlockedAnswers: a.counts.blockedAnswers,
		Rejections:     a.rejections,
		Blocked:        a.blocked(),
		MaxInWindow:    a.counts.maxInWindow,
		LastNonce:      a.lastNonce,
		Account:        a.label,
		Outside:        a.counts.outside,
	}
}

func (a *account) resetCounts() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts = keyCounts{}
}
