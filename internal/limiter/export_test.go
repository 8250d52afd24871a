package limiter

import "fmt"

// ablations names the rules the ablation tests switch off.
var ablations = map[string]ablation{
	"every kept send counts": offNth, "in-flight hold": offHold, "lost hold": offLostHold,
	"bounds keep their L": offKeepL, "order rule": offOrder, "busy machine": offBusy, "loaded machine": offLoaded,
	"outlier bound": offOutlier, "spread raises L": offSpread, "overdue is evidence": offOverdue,
	"window + 1 ms": offGap, "weight in the window": offWeight, "pause after a 429": offPause,
	"fixed: the clock offset": offFixedOffset, "fixed: every interval the arrival may fall in": offFixedSpan,
	"bucket: units drain from their bounds": offBucketBound, "usage reservation": offReserve,
	"usage: what the reports prove": offUsageProven,
	"usage: the largest estimate":   offUsagePeak,
	"registration allowance":        offRegistration,
}

// NewAblated is New with the named rule switched off.
func NewAblated(cfg Config, rule string) (*Limiter, error) {
	off, ok := ablations[rule]
	if !ok {
		return nil, fmt.Errorf("no rule %q to switch off", rule)
	}
	l, err := New(cfg)
	if err != nil {
		return nil, err
	}
	l.off = off
	return l, nil
}

// setAblations names the rules of a Set the ablation tests switch off.
var setAblations = map[string]ablation{
	"reservations": offSetReserve, "charged at the answer": offChargeAtAnswer,
}

// NewSetAblated is NewSet with the named rule switched off; "" switches none.
func NewSetAblated(cfg SetConfig, rule string) (*Set, error) {
	s, err := NewSet(cfg)
	if err != nil || rule == "" {
		return s, err
	}
	off, ok := setAblations[rule]
	if !ok {
		return nil, fmt.Errorf("no rule %q to switch off", rule)
	}
	s.off = off
	return s, nil
}

// AblationRules lists the rules NewAblated can switch off.
func AblationRules() []string {
	out := make([]string, 0, len(ablations))
	for name := range ablations {
		out = append(out, name)
	}
	return out
}

// Kept returns how many sends l keeps a record of.
func (l *Limiter) Kept() int { return len(l.recs) }

// OrderCalm is how many answers in a row without a 400 ease the order rule.
const OrderCalm = orderCalm
