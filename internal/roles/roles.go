// Package roles defines who may do what in ratefleet's corner of NATS: one role per
// kind of client, each with the exact subjects it may publish to and subscribe on,
// derived from streams.yaml. Only the admin creates, updates or deletes streams,
// consumers and buckets; every other role may read their configuration, so it can
// check the declarations, and use the ones its job needs.
//
// The permissions are written for the embedded server (Users), as a nats-server
// configuration block and as nsc commands, from the one definition here.
package roles

import (
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/micro"

	"github.com/ratefleet/ratefleet/internal/service"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/internal/streams"
)

// The role names.
const (
	Producer  = "producer"
	Worker    = "worker"
	Monitor   = "monitor"
	Graveyard = "graveyard"
	Admin     = "admin"
)

// Names returns the role names in the order they are shown.
func Names() []string { return []string{Producer, Worker, Monitor, Graveyard, Admin} }

// Role is one kind of client and the NATS permissions it needs.
type Role struct {
	// Name is the role's name; User is the NATS user name the examples give it.
	Name, User string
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

// Get returns the permissions of the named role.
func Get(cfg *streams.Config, name string) (Role, error) {
	req, grave, adv, st := cfg.Requests.Stream, cfg.Graveyard.Stream, cfg.Graveyard.Advisories, cfg.Stats.Stream
	durable := cfg.Requests.Consumer.Durable
	leases, keys, attempts, replays := cfg.KV.Leases.Bucket, cfg.KV.KeyState.Bucket, cfg.KV.Attempts.Bucket, cfg.KV.Replays.Bucket
	api := func(format string, args ...any) string { return "$JS.API." + fmt.Sprintf(format, args...) }

	// check is what every role but the admin needs to compare the server with
	// streams.yaml: read the configuration of each object, nothing more.
	var check []string
	res := cfg.Results.Stream
	answers := "OBJ_" + cfg.Results.Answers.Bucket
	for _, s := range []string{req.Name, grave.Name, adv.Name, st.Name, res.Name, "KV_" + leases, "KV_" + keys, "KV_" + attempts, "KV_" + replays, answers} {
		if s != "" {
			check = append(check, api("STREAM.INFO.%s", s))
		}
	}
	reply := cfg.Results.ReplyPrefix + ">"
	check = append(check, api("CONSUMER.INFO.%s.%s", req.Name, durable))
	inbox := []string{"_INBOX.>"}

	// kvRead gets entries of a bucket; kvWatch watches it (an ordered push consumer
	// the client creates, answers flow control for and deletes); kvWrite writes.
	kvRead := func(b string) []string {
		return []string{api("DIRECT.GET.KV_%s", b), api("DIRECT.GET.KV_%s.>", b), api("STREAM.MSG.GET.KV_%s", b)}
	}
	kvWatch := func(b string) []string {
		return []string{api("CONSUMER.CREATE.KV_%s", b), api("CONSUMER.CREATE.KV_%s.>", b), api("CONSUMER.DELETE.KV_%s.>", b), "$JS.FC.KV_" + b + ".>"}
	}
	kvWrite := func(b string) []string { return []string{"$KV." + b + ".>"} }
	streamRead := func(s string) []string {
		return []string{api("STREAM.MSG.GET.%s", s), api("DIRECT.GET.%s", s), api("DIRECT.GET.%s.>", s)}
	}
	// ordered reads a stream through ordered consumers the client creates and deletes.
	ordered := func(s string) []string {
		return []string{api("CONSUMER.CREATE.%s.>", s), api("CONSUMER.MSG.NEXT.%s.>", s), api("CONSUMER.DELETE.%s.>", s), api("CONSUMER.INFO.%s.>", s)}
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

	r := Role{Name: name, User: "ratefleet-" + name, Subscribe: inbox}
	switch name {
	case Producer:
		svc := []string{service.DefaultPrefix + ".>", micro.APIPrefix + ".>"}
		r.Commands = "producer, service, callers of the service, and Go services using the client package"
		r.Publish = cat(check, req.Subjects, ordered(res.Name), streamRead(res.Name), svc, streamRead(answers))
		r.Subscribe = cat(inbox, []string{reply}, svc)
		r.Responses = true
		r.Why = []string{
			"publish requests to " + req.Subjects[0] + " (the stream's acks come back on _INBOX)",
			"await results: read " + res.Name + " through ordered consumers it creates and deletes, and receive replies on " + reply,
			"refuse an id already used: get the last result under it in " + res.Name,
			"read an answer too large for a result from the object store " + answers + " (direct gets of the object the result names)",
			"serve and call the " + service.Name + " service on " + svc[0] + " and answer its discovery on " + svc[1] + " (the service answers each request once on its reply subject: allow_responses)",
			"read the configuration of every stream, the workers' consumer and every bucket, to check streams.yaml",
		}
	case Worker:
		keeper := settle.KeeperDurable
		r.Commands = "worker (with its graveyard keeper)"
		r.Publish = cat(check,
			[]string{api("CONSUMER.MSG.NEXT.%s.%s", req.Name, durable), "$JS.ACK." + req.Name + "." + durable + ".>"},
			kvRead(leases), kvWrite(leases), kvWatch(leases),
			kvRead(keys), kvWrite(keys),
			kvRead(attempts), kvWrite(attempts),
			[]string{cfg.Stats.Stream.Subjects[0]},
			grave.Subjects,
			res.Subjects, []string{reply}, streamRead(res.Name),
			[]string{"$O." + cfg.Results.Answers.Bucket + ".>"}, streamRead(answers),
			[]string{
				api("CONSUMER.CREATE.%s.%s", adv.Name, keeper), api("CONSUMER.CREATE.%s.%s.>", adv.Name, keeper),
				api("CONSUMER.INFO.%s.%s", adv.Name, keeper), api("CONSUMER.MSG.NEXT.%s.%s", adv.Name, keeper),
				"$JS.ACK." + adv.Name + "." + keeper + ".>",
				api("STREAM.MSG.GET.%s", req.Name), api("STREAM.MSG.DELETE.%s", req.Name),
			})
		r.Why = []string{
			"pull from the consumer " + req.Name + "/" + durable + " and ack, NAK or terminate its messages",
			"claim, renew, release and watch leases in " + leases + "; read and reserve nonces in " + keys + "; record attempts in " + attempts,
			"publish its counters to " + cfg.Stats.Stream.Subjects[0] + " and buried requests to " + grave.Subjects[0],
			"publish every final outcome to " + cfg.Results.Prefix() + "<id> (reading an earlier one first) and to a request's reply subject under " + reply,
			"keep an answer too large for a result in the object store " + answers,
			"the graveyard keeper: create and read its own durable " + keeper + " on " + adv.Name + " (its only consumer creation), read and remove requests given up on in " + req.Name,
			"read the configuration of every stream, the workers' consumer and every bucket, to check streams.yaml",
		}
	case Monitor:
		r.Commands = "monitor, graveyard ls, graveyard show, streams keys ls"
		r.Publish = cat(check, ordered(st.Name), streamRead(st.Name), kvRead(leases), kvWatch(leases), kvRead(keys), kvWatch(keys), streamRead(grave.Name))
		r.Why = []string{
			"read the workers' reports in " + st.Name + " through ordered consumers it creates and deletes (no durable), or each worker's last (streams keys ls)",
			"follow leases in " + leases + " and key state in " + keys + " (watches: ordered consumers it creates and deletes)",
			"read graveyard entries in " + grave.Name + " (graveyard ls and show)",
			"read the configuration of every stream, the workers' consumer and every bucket, to check streams.yaml",
		}
	case Graveyard:
		r.Commands = "graveyard ls, show, replay, rm and purge"
		r.Publish = cat(check, streamRead(grave.Name), req.Subjects, []string{api("STREAM.MSG.DELETE.%s", grave.Name), api("STREAM.PURGE.%s", grave.Name)},
			kvRead(replays), kvWrite(replays))
		r.Why = []string{
			"read graveyard entries in " + grave.Name,
			"replay: publish fresh requests to " + req.Subjects[0] + ", then remove the replayed entry from " + grave.Name,
			"note each replay in " + replays + " before publishing it, and once stored, so a rerun stores nothing twice",
			"rm and purge: remove entries from " + grave.Name + " (one by one, or all of one reason at once); no other stream",
			"read the configuration of every stream, the workers' consumer and every bucket, to check streams.yaml",
		}
	case Admin:
		r.Commands = "streams apply, streams keys (and any other command)"
		r.Publish = cat([]string{"$JS.API.>", "$JS.FC.>"}, kvWrite(keys))
		r.Why = []string{
			"every JetStream API call: create, update and delete streams, consumers and buckets, and read them all",
			"streams keys: clear a key's quarantine or reset its 429 count in " + keys + " (a compare-and-set write)",
		}
	default:
		return Role{}, fmt.Errorf("unknown role %q: want one of %v", name, Names())
	}
	return r, nil
}
