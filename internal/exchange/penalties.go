package exchange

import (
	"errors"
	"time"
)

// Ban is Binance's penalty: after After rate-limit rejections within Within, from
// the whole upstream (every key: one IP), every request of a known key is answered
// 418 with Retry-After, the seconds left, for the ban's length. The first ban lasts
// For; each later one twice the one before, at most Max. A 418 is no rejection and
// does not lengthen the ban. The reference's block of a key after BlockAfter
// rejections is separate and stays. The zero value never bans.
type Ban struct {
	After  int
	Within time.Duration
	For    time.Duration
	Max    time.Duration // 0 means For: every ban as long
}

func (b Ban) validate() error {
	switch {
	case b.After < 0:
		return errors.New("after must be at least 0 (0 never bans)")
	case b.After == 0:
		return nil
	case b.Within <= 0 || b.For <= 0:
		return errors.New("within and for must be above 0 when After is set")
	case b.Max != 0 && b.Max < b.For:
		return errors.New("max must be 0 or at least for")
	}
	return nil
}

// banState counts the upstream's rejections and its bans. Its owner (limits)
// serializes calls.
type banState struct {
	cfg      Ban
	recent   []int64 // the last After rejections' times, Unix ms, a ring
	next     int
	until    int64 // the ban in force ends here
	offences int   // bans so far: the next lasts For·2^offences
}

func newBanState(b Ban) *banState {
	if b.After == 0 {
		return nil
	}
	if b.Max == 0 {
		b.Max = b.For
	}
	r := make([]int64, b.After)
	for i := range r {
		r[i] = -1 << 62
	}
	return &banState{cfg: b, recent: r}
}

// left returns how long the ban in force at t lasts, 0 when none.
func (b *banState) left(t int64) time.Duration {
	if b == nil || t >= b.until {
		return 0
	}
	return time.Duration(b.until-t) * time.Millisecond
}

// rejected counts a rejection at t and starts a ban when it is the After-th within
// Within; it returns the ban's length, 0 when none started.
func (b *banState) rejected(t int64) time.Duration {
	if b == nil {
		return 0
	}
	b.recent[b.next] = t
	b.next = (b.next + 1) % len(b.recent)
	if first := b.recent[b.next]; t-first > b.cfg.Within.Milliseconds() {
		return 0 // the first of the last After rejections is too old
	}
	d := b.cfg.For
	for range b.offences {
		if d >= b.cfg.Max {
			break
		}
		d *= 2
	}
	d = min(d, b.cfg.Max)
	b.offences++
	b.until = t + d.Milliseconds()
	for i := range b.recent {
		b.recent[i] = -1 << 62 // a new ban needs After fresh rejections
	}
	return d
}
