package limiter

// ablation switches rules of the package doc off, one bit each, so the tests can
// show that each rule is needed (an ablated limiter draws a 429 or a 400 on a
// named model). Only tests set it; a Limiter made by New has none off.
type ablation uint32

// The rules that can be switched off.
const (
	offNth            ablation = 1 << iota // window: only the sends of the last N units count, not every send whose bound may
	offHold                                // a request in flight holds its place only until left + L
	offLostHold                            // a request given up holds its place only until left + L
	offKeepL                               // L going down tightens the bounds of requests answered before
	offOrder                               // no order rule
	offBusy                                // a busy machine does not make answers bound their requests
	offLoaded                              // the machine's cores busy (Lateness.Loaded) do not count as a busy machine
	offOutlier                             // an outlier's bound is left + L, not its answer
	offSpread                              // a spread of evidence does not raise L
	offOverdue                             // a request unanswered past 2L + τ is not evidence until its answer
	offGap                                 // the window needs W, not W + 1 ms, past U
	offWeight                              // a send of w units needs the N-th latest unit bound, not the (N-w+1)-th
	offPause                               // a 429 does not pause the key
	offFixedOffset                         // a fixed window takes the upstream's calendar to be this clock exactly
	offFixedSpan                           // a fixed window counts a send only in the intervals of its send time, not of its whole arrival range
	offBucketBound                         // a bucket drains each unit from its send time, not from its bound
	offSetReserve                          // a Set's open reservations leave no room aside
	offChargeAtAnswer                      // a Set charges a cost known once answered at the send, not at the answer
	offReserve                             // usage reports keep no reservation for another client
	offUsageProven                         // usage reports: only the tightest bound of a group, not what the reports prove nor the spread
	offUsagePeak                           // usage reports: a client seen to vary has only the tightest bound and the spread kept back, not the largest estimate too
	offRegistration                        // an arrival is bounded by left + L, without the upstream's registration allowance
)

func (a ablation) has(b ablation) bool { return a&b != 0 }
