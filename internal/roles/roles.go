// Package roles defines who may do what in ratefleet's corner of NATS: one role per
// kind of client, each with the exact subjects it may publish to and subscribe on,
// derived from streams.yaml. docs/security.md is the threat model they follow.
//
// Only the admin creates, updates or deletes streams and buckets. Every other role
// may read their configuration, so it can check the declarations, and use the ones
// its job needs. Every user answers on its own inbox prefix (wire.InboxPrefix) and
// may subscribe there and nowhere else among inboxes, so no user sees another's
// pulled messages, KV reads or JetStream replies. A producer user publishes
// requests only on its own subject and reads results and replies only under its
// own name (wire.Owner), and creates no consumer at all: NATS permissions cannot
// tell a pull consumer from a push consumer, whose deliver subject is never
// checked against its creator's rights, nor an ephemeral one from a durable.
// Where a role must create consumers (watches, ordered reads of the stats), only
// the form with a filter subject inside that role's streams is allowed.
//
// The permissions are written for the embedded server (the fleet's Access), as a
// nats-server configuration block and as nsc commands, from the one definition
// here.
package roles

import (
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/micro"
	"github.com/ratefleet/ratefleet/internal/service"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// The role names.
const (
	Producer  = "producer"
	Service   = "service"
	Worker    = "worker"
	Keeper    = "keeper"
	Monitor   = "monitor"
	Graveyard = "graveyard"
	Admin     = "admin"
)

// Names returns the role names in the order they are shown.
func Names() []string { return []string{Producer, Service, Worker, Keeper, Monitor, Graveyard, Admin} }

// DefaultUser returns the NATS user name the examples give role.
func DefaultUser(role string) string { return "ratefleet-" + role }

// Role is one kind of client, one user of it, and the NATS permissions it needs.
type Role struct {
	// Name is the role's name; User is the NATS user name, as the server knows
	// it (for an NKey user, its public key).
	Name, User string
	// Inbox is the user's inbox prefix (wire.InboxPrefix): its client must
	// connect with nats.CustomInboxPrefix(Inbox), as ratefleet's commands do.
	Inbox string
	// Commands are the ratefleet commands that run as this role.
	Commands string
	// Publish and Subscribe are the subjects the role may use; nothing else is
	// allowed.
	Publish, Subscribe []string
	// Responses lets the role answer each request it receives, once, on the
	// request's reply subject, whatever that is (the server's allow_responses):
	// what a service needs to answer callers without publishing to every inbox.
	Responses bool
	// Why explains the role's subjects, one line per group, for the table.
	Why []string
}

// All returns every role's permissions for the objects of cfg.
func All(cfg *streams.Config) []Role {
	var out []Role
	for _, n := range Names() {
		r, _ := Get(cfg, n)
		out = append(out, r)
	}
	return out
}

// AllWith returns every role's permissions, with one producer user per name in
// producers instead of the default one (none given keeps it).
func AllWith(cfg *streams.Config, producers []string) ([]Role, error) {
	var out []Role
	for _, n := range Names() {
		users := []string{DefaultUser(n)}
		if n == Producer && len(producers) > 0 {
			users = producers
		}
		for _, u := range users {
			r, err := For(cfg, n, u)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// Get returns the permissions of the named role for its default user.
func Get(cfg *streams.Config, name string) (Role, error) { return For(cfg, name, DefaultUser(name)) }

// For returns the permissions of the named role for NATS user user, which names
// the user's inbox prefix and, for a producer, its requests, results and replies.
func For(cfg *streams.Config, name, user string) (Role, error) {
	owner, err := wire.ParseOwner(user)
	if err != nil {
		return Role{}, fmt.Errorf("role %s: %w", name, err)
	}
	req, grave, adv, st := cfg.Requests.Stream, cfg.Graveyard.Stream, cfg.Graveyard.Advisories, cfg.Stats.Stream
	durable := cfg.Requests.Consumer.Durable
	leases, keys, attempts, replays, cancels := cfg.KV.Leases.Bucket, cfg.KV.KeyState.Bucket, cfg.KV.Attempts.Bucket, cfg.KV.Replays.Bucket, cfg.KV.Cancels.Bucket
	api := func(format string, args ...any) string { return "$JS.API." + fmt.Sprintf(format, args...) }

	// check is what every role but the admin needs to compare the server with
	// streams.yaml: read the configuration of each object, nothing more.
	var check []string
	res := cfg.Results.Stream
	for _, s := range []string{req.Name, grave.Name, adv.Name, st.Name, res.Name, "KV_" + leases, "KV_" + keys, "KV_" + attempts, "KV_" + replays, "KV_" + cancels} {
		if s != "" {
			check = append(check, api("STREAM.INFO.%s", s))
		}
	}
	// The workers' consumers: one per priority and route (streams.RouteConsumers).
	check = append(check, api("CONSUMER.INFO.%s.*", req.Name))
	inbox := wire.InboxPrefix(user)
	reply := cfg.Results.ReplyPrefix + ">"
	base := cfg.Requests.Subject()
	routed := owner.RequestSubject(base) + ".*.*" // <priority>.<route>
	cancel := "$KV." + cancels + "." + wire.CancelPrefix(owner) + "*"
	results := cfg.Results.Prefix() + string(owner) + ".>"
	replies := cfg.Results.ReplyPrefix + string(owner) + ".>"
	svc := service.DefaultPrefix + ".>"

	// kvRead gets entries of a bucket; kvWatch watches it: an ordered push
	// consumer the client creates (only with a filter inside the bucket), answers
	// flow control for and deletes; kvWrite writes.
	kvRead := func(b string) []string {
		return []string{api("DIRECT.GET.KV_%s", b), api("DIRECT.GET.KV_%s.>", b), api("STREAM.MSG.GET.KV_%s", b)}
	}
	kvWatch := func(b string) []string {
		return []string{api("CONSUMER.CREATE.KV_%s.*.$KV.%s.>", b, b), api("CONSUMER.DELETE.KV_%s.*", b), "$JS.FC.KV_" + b + ".>"}
	}
	kvWrite := func(b string) []string { return []string{"$KV." + b + ".>"} }
	streamRead := func(s string) []string {
		return []string{api("STREAM.MSG.GET.%s", s), api("DIRECT.GET.%s", s), api("DIRECT.GET.%s.>", s)}
	}
	// ordered reads a stream through ordered consumers the client creates, with
	// a filter inside the stream's subjects, and deletes.
	ordered := func(s streams.Stream) []string {
		var out []string
		for _, subj := range s.Subjects {
			out = append(out, api("CONSUMER.CREATE.%s.*.%s", s.Name, subj))
		}
		return append(out, api("CONSUMER.MSG.NEXT.%s.*", s.Name), api("CONSUMER.DELETE.%s.*", s.Name), api("CONSUMER.INFO.%s.*", s.Name))
	}
	cat := func(groups ...[]string) []string {
		var out []string
		for _, g := range groups {
			for _, s := range g {
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
		}
		return out
	}
	const checkWhy = "read the configuration of every stream, the workers' consumer and every bucket, to check streams.yaml"
	inboxWhy := "receive answers (JetStream replies, pulled messages, watches) on its own inbox " + inbox + ".>, no other"

	r := Role{Name: name, User: user, Inbox: inbox, Subscribe: []string{inbox + ".>"}}
	serve := func() {
		r.Publish = cat(check,
			[]string{api("CONSUMER.MSG.NEXT.%s.*", req.Name), "$JS.ACK." + req.Name + ".*.>"},
			kvRead(leases), kvWrite(leases), kvWatch(leases),
			kvRead(cancels), kvWatch(cancels),
			kvRead(keys), kvWrite(keys),
			kvRead(attempts), kvWrite(attempts),
			[]string{st.Subjects[0]},
			grave.Subjects,
			res.Subjects, []string{reply}, streamRead(res.Name))
		r.Why = []string{
			"pull from the consumers " + req.Name + "/" + durable + " and " + durable + "_<priority>_<route> (those its keys may serve) and ack, NAK or terminate their messages",
			"watch the cancel marks in " + cancels + ", and read one just before sending while the watch is not running",
			"claim, renew, release and watch leases in " + leases + "; read and reserve nonces, count 429s and mark keys unusable in " + keys + "; record attempts in " + attempts,
			"publish its counters to " + st.Subjects[0] + " and buried requests to " + grave.Subjects[0],
			"publish every final outcome to " + cfg.Results.Prefix() + "<owner>.<id> (reading an earlier one first) and to the owner's reply subject under " + reply,
		}
	}
	switch name {
	case Producer:
		r.Commands = "producer, and Go services using the client package"
		r.Publish = cat(check, []string{owner.RequestSubject(base), routed, cancel, api("DIRECT.GET.%s.%s", res.Name, results)}, []string{svc, micro.APIPrefix + ".>"})
		r.Subscribe = cat(r.Subscribe, []string{replies})
		r.Why = []string{
			"publish requests to " + owner.RequestSubject(base) + " and " + routed + " (a priority and a route) only: they are this user's, and so are their results and replies",
			"cancel its own queued requests by a mark under " + cancel + ", no other's",
			"read its own results by direct get of " + results + " (no consumer: it may create none) and receive its replies on " + replies,
			"call the " + service.Name + " service on " + svc + " and discover it on " + micro.APIPrefix + ".> (answers come back on this user's inbox)",
			checkWhy, inboxWhy,
		}
	case Service:
		r.Commands = "service"
		r.Publish = cat(check, []string{owner.RequestSubject(base), routed, cancel, api("DIRECT.GET.%s.%s", res.Name, results)})
		r.Subscribe = cat(r.Subscribe, []string{replies, svc, micro.APIPrefix + ".>"})
		r.Responses = true
		r.Why = []string{
			"submit its callers' requests as its own, to " + owner.RequestSubject(base) + " and " + routed + ", cancel them under " + cancel + ", and read their results by direct get of " + results + " and replies on " + replies,
			"serve " + svc + " and answer discovery on " + micro.APIPrefix + ".>, each request once on its reply subject (allow_responses); its callers share its requests, results and replies, so one service serves callers who may see each other's",
			checkWhy, inboxWhy,
		}
	case Worker:
		r.Commands = "worker --keeper=false"
		serve()
		r.Why = append(r.Why, checkWhy, inboxWhy)
	case Keeper:
		k := settle.KeeperDurable
		r.Commands = "worker (with its graveyard keeper, the default)"
		serve()
		r.Publish = cat(r.Publish, []string{
			api("CONSUMER.CREATE.%s.%s", adv.Name, k), api("CONSUMER.CREATE.%s.%s.>", adv.Name, k),
			api("CONSUMER.INFO.%s.%s", adv.Name, k), api("CONSUMER.MSG.NEXT.%s.%s", adv.Name, k),
			"$JS.ACK." + adv.Name + "." + k + ".>",
			api("STREAM.MSG.GET.%s", req.Name), api("STREAM.MSG.DELETE.%s", req.Name),
			api("CONSUMER.NAMES.%s", req.Name),
		})
		r.Why = append(r.Why,
			"run the graveyard keeper: create and read its own durable "+k+" on "+adv.Name+", list the consumers of "+req.Name+", read requests given up on there and remove them once buried (the one right it has beyond a worker's)",
			checkWhy, inboxWhy)
	case Monitor:
		r.Commands = "monitor, graveyard ls, graveyard show, streams keys ls"
		r.Publish = cat(check, ordered(st), streamRead(st.Name), kvRead(leases), kvWatch(leases), kvRead(keys), kvWatch(keys), streamRead(grave.Name))
		r.Why = []string{
			"read the workers' reports in " + st.Name + " through ordered consumers it creates (filtered to " + st.Subjects[0] + ") and deletes, or each worker's last (streams keys ls)",
			"follow leases in " + leases + " and key state in " + keys + " (watches: ordered consumers it creates and deletes)",
			"read graveyard entries in " + grave.Name + " (graveyard ls and show)",
			checkWhy, inboxWhy,
		}
	case Graveyard:
		r.Commands = "graveyard ls, show, replay, rm and purge"
		r.Publish = cat(check, streamRead(grave.Name), req.Subjects, []string{api("STREAM.MSG.DELETE.%s", grave.Name), api("STREAM.PURGE.%s", grave.Name)},
			kvRead(replays), kvWrite(replays))
		r.Why = []string{
			"read graveyard entries in " + grave.Name,
			"replay: publish fresh requests to " + base + ".<owner> (the buried request's owner), then remove the replayed entry from " + grave.Name,
			"note each replay in " + replays + " before publishing it, and once stored, so a rerun stores nothing twice",
			"rm and purge: remove entries from " + grave.Name + " (one by one, or all of one reason at once); no other stream",
			checkWhy, inboxWhy,
		}
	case Admin:
		r.Commands = "streams apply, streams keys (and any other command)"
		r.Publish = cat([]string{"$JS.API.>", "$JS.FC.>"}, kvWrite(keys))
		r.Why = []string{
			"every JetStream API call: create, update and delete streams, consumers and buckets, and read them all",
			"streams keys: clear a key's quarantine or reset its 429 count in " + keys + " (a compare-and-set write)",
			inboxWhy,
		}
	default:
		return Role{}, fmt.Errorf("unknown role %q: want one of %v", name, Names())
	}
	return r, nil
}
