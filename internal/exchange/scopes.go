package exchange

import (
	"cmp"
	"fmt"
)

// AnyKey, as a key name in Config.Accounts, gives the account of every key the map
// does not name.
const AnyKey = "*"

// accountOf returns the account of the key named name: its entry in m, else the
// AnyKey entry, else an account of its own, named as the key.
func accountOf(m map[string]string, name string) string {
	if acct, ok := m[name]; ok {
		return acct
	}
	if acct, ok := m[AnyKey]; ok {
		return acct
	}
	return name
}

func validateAccounts(m map[string]string, names map[string]bool) error {
	for k, acct := range m {
		switch {
		case k != AnyKey && !names[k]:
			return fmt.Errorf("no key is named %q (name keys, or %s for every other key)", k, AnyKey)
		case acct == "":
			return fmt.Errorf("key %q has an empty account name", k)
		}
	}
	return nil
}

// instances makes the counters of rule r: one per key, per account or for the
// whole upstream, as its scope says, and gives each key the one it falls under
// (key.counters[i] for the rule's index i). It returns every counter made.
func instances(r Rule, accounts []*account) []counter {
	var all []counter
	shared := map[string]counter{}
	for _, a := range accounts {
		id := ""
		switch r.Scope {
		case PerKey:
			id = "key " + a.key.Name()
		case PerAccount:
			id = "account " + cmp.Or(a.label, a.key.Name())
		}
		c, ok := shared[id]
		if !ok {
			c = newCounter(r)
			shared[id] = c
			all = append(all, c)
		}
		a.counters = append(a.counters, c)
	}
	return all
}
