package wire_test

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/wire"
)

func TestOwnerOf_TheSubjectNamesTheOwner(t *testing.T) {
	tests := []struct {
		subject string
		want    wire.Owner
		ok      bool
	}{
		{"ratefleet.requests", wire.Anonymous, true},
		{"ratefleet.requests.alice", "alice", true},
		{"ratefleet.requests.ratefleet-producer", "ratefleet-producer", true},
		{"ratefleet.requests.alice.bob", "", false}, // two tokens: not a user
		{"ratefleet.requests.*", "", false},         // a wildcard names nobody
		{"ratefleet.requestsalice", "", false},      // not under the subject
		{"ratefleet.other.alice", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got, err := wire.OwnerOf("ratefleet.requests", tt.subject)
			if !tt.ok {
				require.ErrorIs(t, err, wire.ErrOwner)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.subject, got.RequestSubject("ratefleet.requests"), "the owner's subject is where it came from")
		})
	}
}

func TestParseOwner_OneSubjectToken(t *testing.T) {
	for _, bad := range []string{"", "a.b", "a b", "a*", "a>", "ä", string(make([]byte, 129))} {
		_, err := wire.ParseOwner(bad)
		require.ErrorIs(t, err, wire.ErrOwner, "%q", bad)
	}
	for _, good := range []string{"alice", "ratefleet-producer", "UA3C5TBZYK5GJQJRWPMU6NVXFKB7GUVDWBVGXFR5CYMXTNRMI3IHP3ZE", "a_b"} {
		o, err := wire.ParseOwner(good)
		require.NoError(t, err)
		require.Equal(t, good, string(o))
	}
}

// Each owner's outcome subjects lie under its own token, and no id can reach
// another's: the id is one token, a digest for an owner (a listing of the
// stream's subjects tells no id), the id itself for Anonymous.
func TestResultSubject_OwnersNeverShareASubject(t *testing.T) {
	digest := func(id string) string {
		sum := sha256.Sum256([]byte(id))
		return base64.RawURLEncoding.EncodeToString(sum[:])
	}
	tests := []struct {
		owner   wire.Owner
		id      string
		result  string
		reply   string
		msgID   string
		resMsgs string
	}{
		{"alice", "order-1", "ratefleet.results.alice." + digest("order-1"), "ratefleet.reply.alice." + digest("order-1"), "alice/order-1", "alice." + digest("order-1") + "/7/1"},
		{"alice", "bob.x >*", "ratefleet.results.alice." + digest("bob.x >*"), "ratefleet.reply.alice." + digest("bob.x >*"), "alice/bob.x >*", "alice." + digest("bob.x >*") + "/7/1"},
		{wire.Anonymous, "order-1", "ratefleet.results.b3JkZXItMQ", "ratefleet.reply.b3JkZXItMQ", "order-1", "b3JkZXItMQ/7/1"},
	}
	for _, tt := range tests {
		t.Run(string(tt.owner)+"/"+tt.id, func(t *testing.T) {
			require.Equal(t, tt.result, wire.ResultSubject("ratefleet.results.", tt.owner, tt.id))
			require.Equal(t, tt.reply, wire.ReplySubject("ratefleet.reply.", tt.owner, tt.id))
			require.Equal(t, tt.msgID, tt.owner.MsgID(tt.id))
			require.Equal(t, tt.resMsgs, wire.ResultMsgID(tt.owner, tt.id, 7, "1"))
			require.True(t, tt.owner.MayReplyTo("ratefleet.reply.", tt.reply), "the derived reply subject is the owner's")
			require.NotContains(t, tt.result[len("ratefleet.results."):], ".>*", "one token")
		})
	}
}

func TestMayReplyTo_OnlyUnderTheOwnersName(t *testing.T) {
	tests := []struct {
		owner   wire.Owner
		subject string
		ok      bool
	}{
		{"alice", "ratefleet.reply.alice.x", true},
		{"alice", "ratefleet.reply.alice.x.y", true},
		{"alice", "ratefleet.reply.alice", false},
		{"alice", "ratefleet.reply.bob.x", false},
		{"alice", "ratefleet.reply.alicex.y", false},
		{"alice", "ratefleet.reply.x", false},
		{"alice", "ratefleet.reply.alice.*", false},
		{wire.Anonymous, "ratefleet.reply.x", true},
		{wire.Anonymous, "ratefleet.reply.bob.x", false}, // inside bob's subjects
		{wire.Anonymous, "$JS.API.x", false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.ok, tt.owner.MayReplyTo("ratefleet.reply.", tt.subject), "%q may reply to %q", tt.owner, tt.subject)
	}
}

func TestDecodeFrom_TheOwnerComesFromTheSubjectNeverTheRecord(t *testing.T) {
	r := wire.New(time.Unix(1000, 0), time.Second, []byte(`{"owner":"bob"}`))
	r.ReplyTo = "ratefleet.reply.bob.x"
	data, err := r.Encode()
	require.NoError(t, err)

	got, err := wire.DecodeFrom("ratefleet.requests", "ratefleet.requests.alice", data)
	require.NoError(t, err)
	require.Equal(t, wire.Owner("alice"), got.Owner)
	require.Error(t, got.CheckReply("ratefleet.reply."), "alice's request may not reply into bob's subjects")
	got.ReplyTo = ""
	require.Equal(t, wire.ReplySubject("ratefleet.reply.", "alice", r.ID), got.ReplySubject("ratefleet.reply."))

	_, err = wire.DecodeFrom("ratefleet.requests", "ratefleet.requests.a.b", data)
	require.ErrorIs(t, err, wire.ErrMalformed)

	newer := []byte(`{"v":99,"id":"x"}`)
	got, err = wire.DecodeFrom("ratefleet.requests", "ratefleet.requests.alice", newer)
	require.ErrorIs(t, err, wire.ErrUnsupportedVersion)
	require.Equal(t, wire.Owner("alice"), got.Owner, "its burial still reaches its owner")
	require.Equal(t, "x", got.ID)
}

func TestUserOf_TheNameThePermissionsUse(t *testing.T) {
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	claims := func(body string) string {
		return "eyJhbGciOiJlZDI1NTE5LW5rZXkifQ." + base64.RawURLEncoding.EncodeToString([]byte(body)) + ".sig"
	}
	tests := []struct {
		name string
		opts nats.Options
		want string
	}{
		{"user and password", nats.Options{User: "alice", Password: "pw"}, "alice"},
		{"an NKey", nats.Options{Nkey: pub}, pub},
		{"credentials", nats.Options{UserJWT: func() (string, error) { return claims(`{"name":"alice","sub":"` + pub + `"}`), nil }}, "alice"},
		{"credentials without a name", nats.Options{UserJWT: func() (string, error) { return claims(`{"sub":"` + pub + `"}`), nil }}, pub},
		{"unreadable credentials", nats.Options{UserJWT: func() (string, error) { return "", errors.New("no file") }}, ""},
		{"a token", nats.Options{Token: "t"}, ""},
		{"none", nats.Options{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, wire.UserOf(&tt.opts))
		})
	}
	require.Equal(t, "_INBOX_alice", wire.InboxPrefix("alice"))
	require.Equal(t, "_INBOX", wire.InboxPrefix(""))
}
