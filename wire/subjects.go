package wire

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Owner names the NATS user a request belongs to, as one subject token. The
// zero value is Anonymous.
type Owner string

// Anonymous is the owner of a request published on the bare requests subject.
const Anonymous Owner = ""

// ErrOwner is wrapped by the errors for a user name that cannot name an owner, or
// a subject that names none.
var ErrOwner = errors.New("not a request owner")

// maxOwner bounds an owner's length (an NKey public key is 56 characters).
const maxOwner = 128

// ParseOwner checks that user can name an owner: 1 to 128 letters, digits, '-'
// or '_', so it is exactly one subject token and one inbox prefix.
func ParseOwner(user string) (Owner, error) {
	if user == "" || len(user) > maxOwner {
		return "", fmt.Errorf("%w: user name %q must be 1 to %d characters", ErrOwner, user, maxOwner)
	}
	for _, c := range user {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", fmt.Errorf("%w: user name %q may hold only letters, digits, '-' and '_' (it becomes a subject token)", ErrOwner, user)
		}
	}
	return Owner(user), nil
}

// OwnerOf returns the owner of a request the requests stream stored under
// subject, where requests is the stream's bare subject ("ratefleet.requests"):
// Anonymous for requests itself (and requests.<priority>.<route>), alice for
// requests.alice (and requests.alice.<priority>.<route>); see PlaceOf.
func OwnerOf(requests, subject string) (Owner, error) {
	pl, err := PlaceOf(requests, subject)
	if err != nil {
		return "", err
	}
	return pl.Owner, nil
}

// RequestSubject returns the subject o publishes requests to, under the
// requests stream's bare subject.
func (o Owner) RequestSubject(requests string) string {
	if o == Anonymous {
		return requests
	}
	return requests + "." + string(o)
}

// ResultSubject returns the subject of the result of o's request id in the
// results stream, under prefix (the results subject without its final
// wildcard, "ratefleet.results."): prefix<owner>.<digest of the id>, or
// prefix<id as a token> for Anonymous.
func ResultSubject(prefix string, o Owner, id string) string { return outcomeSubject(prefix, o, id) }

// ReplySubject returns the subject a worker sends the result of o's request id
// to when the request names no reply_to, under the reply prefix
// ("ratefleet.reply."): the caller subscribes there before it submits.
func ReplySubject(prefix string, o Owner, id string) string { return outcomeSubject(prefix, o, id) }

// outcomeSubject is the one derivation of where an outcome goes: the owner's
// token, then the id's (idToken).
func outcomeSubject(prefix string, o Owner, id string) string {
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	if o == Anonymous {
		return prefix + idToken(o, id)
	}
	return prefix + string(o) + "." + idToken(o, id)
}

// idToken names o's request id in its subjects: for an owner, the SHA-256 of the
// id (unpadded base64url), since any role that may check the declarations can
// list a stream's subjects, and the ids of one user's requests are no other's to
// read; for Anonymous, the id itself (Token), as before owners existed.
func idToken(o Owner, id string) string {
	if o == Anonymous {
		return Token(id)
	}
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// MayReplyTo reports whether a request of o may name subject as its reply_to:
// a subject under prefix<owner>. (at least one token more), or, for Anonymous,
// exactly one token under prefix, which no owner's subjects hold.
func (o Owner) MayReplyTo(prefix, subject string) bool {
	if ValidSubject(subject) != nil {
		return false
	}
	rest, ok := strings.CutPrefix(subject, prefix)
	if !ok || rest == "" {
		return false
	}
	if o == Anonymous {
		return !strings.Contains(rest, ".")
	}
	after, ok := strings.CutPrefix(rest, string(o)+".")
	return ok && after != ""
}

// MsgID returns the Nats-Msg-Id of o's request id, by which the requests stream
// drops a retried publish: the id itself for Anonymous, prefixed with the owner
// otherwise, so two callers' equal ids are two requests.
func (o Owner) MsgID(id string) string {
	if o == Anonymous {
		return id
	}
	return string(o) + "/" + id
}

// ResultMsgID returns the Nats-Msg-Id of a result of o's request id stored at
// seq in the requests stream, by which the results stream drops a retried
// publish: which is the delivery that wrote it, or "buried".
func ResultMsgID(o Owner, id string, seq uint64, which string) string {
	s := idToken(o, id) + "/" + strconv.FormatUint(seq, 10) + "/" + which
	if o == Anonymous {
		return s
	}
	return string(o) + "." + s
}

// PartSubject returns the subject of part i of the body of the result at
// subject (ResultSubject) written by delivery of the request stored at seq: a
// body too large for one message travels in parts, in the results stream under
// the owner's subjects, so whoever may read the result may read its body, and
// no one else.
func PartSubject(subject string, seq, delivery uint64, i int) string {
	return fmt.Sprintf("%s.body.%d.%d.%d", subject, seq, delivery, i)
}

// HeaderPart marks a message of the results stream that is a part of a
// result's body, not a result.
const HeaderPart = "Ratefleet-Part"

// Token encodes a request id as one NATS subject token (unpadded base64url), so
// that any id, dots and spaces included, names exactly one subject.
func Token(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

// DecodeFrom decodes a request the requests stream stored under subject, where
// requests is the stream's bare subject, and sets its Owner from the subject. A
// subject that names no owner is ErrMalformed: the request is not anyone's to
// answer. So is a record whose priority or route is not its subject's: the
// subject decided which keys were offered it (Request.Subject). With
// ErrUnsupportedVersion, the returned request still carries its ID and Owner,
// so its burial reaches its owner.
func DecodeFrom(requests, subject string, data []byte) (Request, error) {
	pl, err := PlaceOf(requests, subject)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %w (publish on %s.<your NATS user>[.<priority>.<route>])", ErrMalformed, err, requests)
	}
	r, err := Decode(data)
	r.Owner = pl.Owner
	if err == nil && (r.Prio() != pl.Priority || r.Route() != pl.Route) {
		return r, fmt.Errorf("%w: request %s names priority %s and route %s, but was published on %s (priority %s, route %s): publish it on %s",
			ErrMalformed, r.ID, r.Prio(), r.Route(), subject, pl.Priority, pl.Route, r.Subject(requests))
	}
	return r, err
}

// CheckReply checks that the request's reply_to lies in its owner's reply
// subjects under prefix (see Owner.MayReplyTo).
func (r Request) CheckReply(prefix string) error {
	if r.ReplyTo == "" || r.Owner.MayReplyTo(prefix, r.ReplyTo) {
		return nil
	}
	want := prefix + "<one token>"
	if r.Owner != Anonymous {
		want = prefix + string(r.Owner) + ".<tokens>"
	}
	return fmt.Errorf("reply_to %q is not the owner's to reply to: a request published on the owner's subject replies only under %s (streams.yaml results.reply_prefix)", r.ReplyTo, want)
}

// ReplySubject returns where the worker sends the request's result besides the
// results stream: its reply_to when it names one, else its owner's
// ReplySubject under prefix.
func (r Request) ReplySubject(prefix string) string {
	if r.ReplyTo != "" {
		return r.ReplyTo
	}
	return ReplySubject(prefix, r.Owner, r.ID)
}

// InboxPrefix returns the inbox prefix of NATS user (for nats.CustomInboxPrefix):
// _INBOX_<user>, whose subjects only that user may subscribe to, so no other
// client sees the answers it gets (pulled messages, KV reads, JetStream API
// replies). A user with no name keeps NATS's _INBOX.
func InboxPrefix(user string) string {
	if user == "" {
		return nats.InboxPrefix[:len(nats.InboxPrefix)-1]
	}
	return "_INBOX_" + user
}

// UserOf returns the name the NATS server knows the user of o by, as
// ratefleet's permissions name it: the user of a user and password, the public
// key of an NKey, the name of a credentials file's JWT (nsc add user --name);
// empty for a token or no authentication.
func UserOf(o *nats.Options) string {
	switch {
	case o.User != "":
		return o.User
	case o.Nkey != "":
		return o.Nkey
	case o.UserJWT != nil:
		jwt, err := o.UserJWT()
		if err != nil {
			return ""
		}
		parts := strings.Split(jwt, ".")
		if len(parts) != 3 {
			return ""
		}
		body, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			return ""
		}
		var claims struct {
			Name string `json:"name"`
			Sub  string `json:"sub"`
		}
		if json.Unmarshal(body, &claims) != nil {
			return ""
		}
		if claims.Name != "" {
			return claims.Name
		}
		return claims.Sub
	}
	return ""
}

// CancelKey returns the key of the cancel mark of o's request id in the
// cancels bucket: u.<owner>.<digest of the id> (the digest as in
// ResultSubject), or a.<id as a token> for Anonymous. NATS permissions give
// each user $KV.<bucket>.u.<its name>.* alone (CancelPrefix), so no one marks
// another's request.
func CancelKey(o Owner, id string) string {
	if o == Anonymous {
		return "a." + idToken(o, id)
	}
	return CancelPrefix(o) + idToken(o, id)
}

// CancelPrefix returns the start of every cancel key of o: "u.<owner>.".
func CancelPrefix(o Owner) string { return "u." + string(o) + "." }
