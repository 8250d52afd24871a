package monitor

import "fmt"

// stalled says why the queue is not moving, or "" when it is or may be: requests
// wait, and no key is held by a worker, so nothing pulls them. (A failover shows
// here for a few seconds; once it lasts, the workers' keepers bury the requests
// whose time to live runs out as key_unusable.)
func stalled(s Snapshot) string {
	q := s.Queue
	if q.Err != "" || q.Waiting+uint64(q.AwaitingAck) == 0 {
		return ""
	}
	unusable, quarantined, live := 0, 0, 0
	for _, k := range s.Keys {
		if k.Holder != "" {
			return ""
		}
		if k.Unusable {
			unusable++
		}
		if k.Quarantined {
			quarantined++
		}
	}
	for _, w := range s.Workers {
		if w.State == "active" || w.State == "standby" {
			live++
		}
	}
	switch {
	case len(s.Keys) > 0 && unusable == len(s.Keys):
		return fmt.Sprintf("every key is unusable (%d quarantined by the ban guard, %d refused by the upstream): add a key or clear its state; "+
			"requests whose time to live runs out go to the graveyard as key_unusable", quarantined, unusable-quarantined)
	case live == 0:
		return "no worker is running: workers pull requests only for the keys they hold"
	default:
		return fmt.Sprintf("no worker holds a key (%d workers running, %d of %d keys unusable): a failover, or workers that cannot claim; "+
			"if it lasts, requests whose time to live runs out go to the graveyard as key_unusable", live, unusable, len(s.Keys))
	}
}
