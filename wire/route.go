package wire

import (
	"fmt"
	"strings"
)

// Priority is a request's class in the queue: a key takes urgent requests before
// batch ones, and a batch request at least once every BatchEvery sends while
// both wait (docs/operating.md, "Routes and priorities").
type Priority string

// The priorities, in the order a key looks at them.
const (
	Urgent Priority = "urgent"
	Batch  Priority = "batch"
)

// DefaultPriority is the priority of a request that names none.
const DefaultPriority = Batch

// Priorities returns every priority, urgent first.
func Priorities() []Priority { return []Priority{Urgent, Batch} }

// BatchEvery bounds how long a key passes a waiting batch request over: while
// requests of both priorities wait for a key, at least one in every BatchEvery
// it takes is a batch request (BatchEvery-1 urgent ones, then a batch one).
const BatchEvery = 4

// CheckPriority checks a priority a request names; "" means DefaultPriority.
func CheckPriority(p Priority) error {
	switch p {
	case "", Urgent, Batch:
		return nil
	}
	return fmt.Errorf("priority %q: want %s or %s (empty means %s)", p, Urgent, Batch, DefaultPriority)
}

// RouteKind says which keys may send a request.
type RouteKind string

// The kinds of route.
const (
	// RouteAny: any key.
	RouteAny RouteKind = "any"
	// RouteKey: the one key of that name.
	RouteKey RouteKind = "key"
	// RouteAccount: a key of that account (keys.Key.Account).
	RouteAccount RouteKind = "acct"
	// RouteLabel: a key carrying that label (keys.Key.HasLabel).
	RouteLabel RouteKind = "label"
)

// Route names the keys that may send a request: any key, or those of one key
// name, account or label.
type Route struct {
	Kind RouteKind
	// Name is the key's, account's or label's name; empty for RouteAny.
	Name string
}

// Any is the route of a request that names no key, account or label.
var Any = Route{Kind: RouteAny}

// maxRouteName bounds a key, account or label name in a route.
const maxRouteName = 64

// CheckRouteName checks that name can name a key, an account or a label in a
// route: 1 to 64 letters, digits, '-' or '_', as a keys file allows, so the
// route is one subject token and one part of a consumer's name.
func CheckRouteName(name string) error {
	if name == "" || len(name) > maxRouteName {
		return fmt.Errorf("name %q must be 1 to %d characters", name, maxRouteName)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("name %q may hold only letters, digits, '-' and '_'", name)
		}
	}
	return nil
}

// Token returns the route as one subject token: any, key-<name>,
// acct-<name> or label-<name>.
func (r Route) Token() string {
	if r.Kind == RouteAny || r.Kind == "" {
		return string(RouteAny)
	}
	return string(r.Kind) + "-" + r.Name
}

// String returns the route's token.
func (r Route) String() string { return r.Token() }

// ParseRoute reads a route token (Route.Token).
func ParseRoute(tok string) (Route, error) {
	if tok == string(RouteAny) {
		return Any, nil
	}
	kind, name, ok := strings.Cut(tok, "-")
	switch RouteKind(kind) {
	case RouteKey, RouteAccount, RouteLabel:
	default:
		ok = false
	}
	if !ok {
		return Route{}, fmt.Errorf("route %q: want any, key-<name>, acct-<name> or label-<name>", tok)
	}
	if err := CheckRouteName(name); err != nil {
		return Route{}, fmt.Errorf("route %q: %w", tok, err)
	}
	return Route{Kind: RouteKind(kind), Name: name}, nil
}

// Route returns the keys that may send the request, from its key, account or
// label field.
func (r Request) Route() Route {
	switch {
	case r.Key != "":
		return Route{Kind: RouteKey, Name: r.Key}
	case r.Account != "":
		return Route{Kind: RouteAccount, Name: r.Account}
	case r.Label != "":
		return Route{Kind: RouteLabel, Name: r.Label}
	}
	return Any
}

// Prio returns the request's priority, DefaultPriority when it names none.
func (r Request) Prio() Priority {
	if r.Priority == "" {
		return DefaultPriority
	}
	return r.Priority
}

// CheckRoute checks the key, account, label and priority fields: at most one
// of the first three, each a valid name (CheckRouteName), and a known priority.
func (r Request) CheckRoute() error {
	n := 0
	for _, f := range [...]struct{ field, v string }{{"key", r.Key}, {"account", r.Account}, {"label", r.Label}} {
		if f.v == "" {
			continue
		}
		n++
		if err := CheckRouteName(f.v); err != nil {
			return fmt.Errorf("%s: %w", f.field, err)
		}
	}
	if n > 1 {
		return fmt.Errorf("names more than one of key, account and label: name at most one")
	}
	return CheckPriority(r.Priority)
}

// RoutedSubject returns the subject o publishes a request of priority p and
// route rt to, under the requests stream's bare subject: the owner's
// RequestSubject for a batch request any key may send (what ratefleet wrote
// before routes existed, which every worker reads), else
// <requests>.<owner>.<priority>.<route>, or <requests>.<priority>.<route> for
// Anonymous.
func (o Owner) RoutedSubject(requests string, p Priority, rt Route) string {
	if p == "" {
		p = DefaultPriority
	}
	if p == DefaultPriority && rt.Token() == string(RouteAny) {
		return o.RequestSubject(requests)
	}
	return o.RequestSubject(requests) + "." + string(p) + "." + rt.Token()
}

// Subject returns the subject the request is published to (Owner.RoutedSubject).
func (r Request) Subject(requests string) string {
	return r.Owner.RoutedSubject(requests, r.Prio(), r.Route())
}

// Place is where a request's subject puts it: whose it is, its priority and
// which keys may send it.
type Place struct {
	Owner    Owner
	Priority Priority
	Route    Route
}

// PlaceOf reads the owner, priority and route from a subject the requests
// stream stored a request under, where requests is the stream's bare subject:
// requests and requests.<user> are batch requests any key sends;
// requests.<priority>.<route> and requests.<user>.<priority>.<route> say theirs.
func PlaceOf(requests, subject string) (Place, error) {
	pl := Place{Priority: DefaultPriority, Route: Any}
	if subject == requests {
		return pl, nil
	}
	rest, ok := strings.CutPrefix(subject, requests+".")
	if !ok {
		return Place{}, fmt.Errorf("%w: subject %q is not under %s", ErrOwner, subject, requests)
	}
	toks := strings.Split(rest, ".")
	var err error
	switch len(toks) {
	case 1:
		pl.Owner, err = ParseOwner(toks[0])
		return pl, err
	case 2:
	case 3:
		if pl.Owner, err = ParseOwner(toks[0]); err != nil {
			return Place{}, err
		}
		toks = toks[1:]
	default:
		return Place{}, fmt.Errorf("%w: subject %q is not %s[.<user>][.<priority>.<route>]", ErrOwner, subject, requests)
	}
	pl.Priority = Priority(toks[0])
	if pl.Priority == "" || CheckPriority(pl.Priority) != nil {
		return Place{}, fmt.Errorf("%w: subject %q: priority %q: want %s or %s", ErrOwner, subject, toks[0], Urgent, Batch)
	}
	if pl.Route, err = ParseRoute(toks[1]); err != nil {
		return Place{}, fmt.Errorf("%w: subject %q: %w", ErrOwner, subject, err)
	}
	return pl, nil
}
