// Package keys loads the upstream API keys a worker may use and names them safely.
//
// Secrets come from a file or the environment, never from NATS. Everywhere else (NATS
// subjects and KV entries, logs, stats, errors) a key is named by its name and a short
// fingerprint; Key's String and LogValue methods never reveal the secret.
package keys

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/ratefleet/ratefleet/wire"
)

// EnvVar is the environment variable read when no keys file is given: a comma- or
// newline-separated list of `name=secret` or bare secrets.
const EnvVar = "RATEFLEET_KEYS"

// ErrNoKeys is returned when no key could be loaded.
var ErrNoKeys = errors.New("no API keys")

// Key is one upstream API key: its name here, and what the upstream knows it by.
// Where the upstream signs requests, the key has an id (the public API key, sent
// with every request), a secret that only signs, and perhaps a passphrase; where
// it does not, the secret itself is the API key sent.
type Key struct {
	name        string
	fingerprint string
	secret      string
	id          string
	passphrase  string
	account     string
	labels      []string
}

// New returns a key with the given name and secret, and no id: the secret is the
// API key sent.
func New(name, secret string) Key {
	sum := sha256.Sum256([]byte(secret))
	return Key{name: name, fingerprint: hex.EncodeToString(sum[:4]), secret: secret}
}

// NewSigning returns a key with an id (the public API key), a secret for
// signing, and an optional passphrase.
func NewSigning(name, id, secret, passphrase string) Key {
	k := New(name, secret)
	k.id, k.passphrase = id, passphrase
	return k
}

// WithGroups returns k in the given account and with the given labels. An
// account names the keys an upstream counts together (its limit scope
// "account"); labels name what the key may serve (a model, a sub-account).
func (k Key) WithGroups(account string, labels []string) Key {
	k.account, k.labels = account, slices.Clone(labels)
	return k
}

// Account returns the key's account: the one its keys-file line names, or the
// key's own name when none is named (an account of its own).
func (k Key) Account() string {
	if k.account == "" {
		return k.name
	}
	return k.account
}

// Labels returns the key's labels, in the order the keys file gives them.
func (k Key) Labels() []string { return slices.Clone(k.labels) }

// HasLabel reports whether the key carries the label l.
func (k Key) HasLabel(l string) bool { return slices.Contains(k.labels, l) }

// ID returns the key's public id, or "" when it has none.
func (k Key) ID() string { return k.id }

// APIKey returns what the upstream is sent as the API key: the id, or the secret
// when the key has no id.
func (k Key) APIKey() string {
	if k.id != "" {
		return k.id
	}
	return k.secret
}

// Passphrase returns the key's passphrase, "" when none; for signing only.
func (k Key) Passphrase() string { return k.passphrase }

// Name returns the key's name, such as key1.
func (k Key) Name() string { return k.name }

// Fingerprint returns the first 8 hex digits of the SHA-256 of the secret.
func (k Key) Fingerprint() string { return k.fingerprint }

// Secret returns the secret itself, for the upstream request only.
func (k Key) Secret() string { return k.secret }

// String names the key without its secret.
func (k Key) String() string { return k.name + "(" + k.fingerprint + ")" }

// LogValue names the key in structured logs without its secret.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", k.name), slog.String("fp", k.fingerprint))
}

// Load reads keys from path, or from the environment variable EnvVar when path is
// empty. getenv is os.Getenv outside tests.
func Load(path string, getenv func(string) string) ([]Key, error) {
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read API keys: %w", err)
		}
		defer f.Close()
		return Parse(path, f)
	}
	v := getenv(EnvVar)
	if strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("%w: pass --keys-file FILE (one `name=secret` or secret a line) or set %s", ErrNoKeys, EnvVar)
	}
	return Parse(EnvVar, strings.NewReader(strings.ReplaceAll(v, ",", "\n")))
}

// Parse reads one key a line, in one of three forms:
//
//	name=secret
//	secret
//	name [id=PUBLIC_KEY] secret=SECRET [passphrase=PASSPHRASE] [account=ACCOUNT] [labels=a,b]
//
// A bare secret is named key<N> after its position; a bare base64 secret ending
// in padding (abc==) is read whole, but one ending in a single = reads as a name
// with no secret, and is refused: name it (k=abc=). Spaces around the = of
// name=secret are allowed. The third form is for upstreams that sign requests:
// fields are separated by spaces, with none around their =, and each value is
// read whole (a base64 secret may hold '='). account= puts the key in a named
// group the upstream counts together, labels= names what it may serve; both are
// names as a key's is (labels comma-separated). Blank lines and lines starting with #
// are skipped. Names must be unique and usable as NATS KV keys; secrets and ids
// must be unique too.
//
// An error names the source, the line and the field at fault, and never any
// content of the line: a line that is not what it should be may hold a secret
// anywhere.
func Parse(source string, r io.Reader) ([]Key, error) {
	var out []Key
	names, secrets, ids := map[string]int{}, map[string]int{}, map[string]int{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s line %d: %s", source, line, fmt.Sprintf(format, args...))
		}
		k, err := parseLine(text, len(out)+1)
		if err != nil {
			return nil, bad("%v", err)
		}
		switch {
		case k.secret == "":
			return nil, bad("secret: empty (a bare base64 secret ending in a single = reads as a name without a secret: name it, as in name=SECRET)")
		case !validName(k.name):
			return nil, bad("name: may hold only letters, digits, '-' and '_'")
		case names[k.name] != 0:
			return nil, bad("name: already used on line %d; names must be unique", names[k.name])
		case secrets[k.secret] != 0:
			return nil, bad("secret: the same as on line %d; each key needs its own", secrets[k.secret])
		case k.id != "" && ids[k.id] != 0:
			return nil, bad("id: the same as on line %d; each key needs its own", ids[k.id])
		}
		names[k.name], secrets[k.secret] = line, line
		if k.id != "" {
			ids[k.id] = line
		}
		out = append(out, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read API keys from %s: %w", source, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w in %s", ErrNoKeys, source)
	}
	return out, nil
}

// signingFields are the fields of a signing key's line, after its name.
var signingFields = []string{"id", "secret", "passphrase", "account", "labels"}

// parseLine reads one non-blank line; n is the key's position, for a bare secret's
// name. Its errors hold nothing of the line but the positions of its words.
func parseLine(text string, n int) (Key, error) {
	if fields := strings.Fields(text); len(fields) > 1 && !strings.Contains(fields[0], "=") && !strings.HasPrefix(fields[1], "=") {
		name := fields[0]
		values := map[string]string{}
		for i, f := range fields[1:] {
			field, value, ok := strings.Cut(f, "=")
			switch {
			case !ok || value == "" || field == "":
				return Key{}, fmt.Errorf("word %d: not field=value; write `name id=PUBLIC secret=SECRET [passphrase=P]`, with no spaces around =", i+2)
			case !slices.Contains(signingFields, field):
				return Key{}, fmt.Errorf("word %d: not a field of a key's line (id=, secret=, passphrase=, account=, labels=)", i+2)
			case values[field] != "":
				return Key{}, fmt.Errorf("%s: given twice", field)
			}
			values[field] = value
		}
		if values["secret"] == "" {
			return Key{}, errors.New("secret: missing; add secret=SECRET")
		}
		var labels []string
		if v := values["labels"]; v != "" {
			labels = strings.Split(v, ",")
		}
		if a := values["account"]; a != "" && !validName(a) {
			return Key{}, errors.New("account: may hold only letters, digits, '-' and '_'")
		}
		for _, l := range labels {
			if !validName(l) {
				return Key{}, errors.New("labels: each may hold only letters, digits, '-' and '_', separated by commas")
			}
		}
		return NewSigning(name, values["id"], values["secret"], values["passphrase"]).WithGroups(values["account"], labels), nil
	}
	name, secret, named := strings.Cut(text, "=")
	// A bare base64 secret's padding is not a name=secret separator.
	if !named || (secret != "" && strings.Trim(secret, "=") == "") {
		name, secret = fmt.Sprintf("key%d", n), text
	}
	return New(strings.TrimSpace(name), strings.TrimSpace(secret)), nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Routes returns the routes of the requests the key may send, in the order a
// session looks at them: those naming the key, its account, each of its
// labels, then those naming none (wire.Any). Only a key whose line names an
// account or labels may be named by a request: another serves wire.Any alone.
func (k Key) Routes() []wire.Route {
	if k.account == "" && len(k.labels) == 0 {
		// A key whose line names no account and no label serves only
		// requests any key may send: each route is a consumer of its own,
		// and the server's work on every acknowledgement grows with their
		// number.
		return []wire.Route{wire.Any}
	}
	out := []wire.Route{{Kind: wire.RouteKey, Name: k.name}, {Kind: wire.RouteAccount, Name: k.Account()}}
	for _, l := range k.labels {
		out = append(out, wire.Route{Kind: wire.RouteLabel, Name: l})
	}
	return append(out, wire.Any)
}

// Serves reports whether the key may send a request of route r.
func (k Key) Serves(r wire.Route) bool {
	if r.Kind != wire.RouteAny && k.account == "" && len(k.labels) == 0 {
		return false
	}
	switch r.Kind {
	case wire.RouteKey:
		return r.Name == k.name
	case wire.RouteAccount:
		return r.Name == k.Account()
	case wire.RouteLabel:
		return k.HasLabel(r.Name)
	}
	return true
}

// RoutesOf returns the routes the keys ks may send, each once, in the order
// of ks: what the admin declares consumers for (streams apply --keys-file).
func RoutesOf(ks []Key) []wire.Route {
	var out []wire.Route
	for _, k := range ks {
		for _, r := range k.Routes() {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}
