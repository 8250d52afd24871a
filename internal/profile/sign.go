package profile

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/wire"
)

// Sign says how a request is signed: an HMAC, keyed by the key's secret, over a
// message assembled from parts of the request, written in hex or base64 into a
// header or a query parameter.
//
// Message is a list of parts, joined by Separator:
//
//	method      the HTTP method
//	path        the path as sent (with the base URL's prefix)
//	query       the query string as sent, without '?', signature excluded
//	target      path, then '?' and the query if there is one
//	body        the body as sent
//	nonce       the nonce in decimal
//	timestamp   the timestamp in decimal
//	passphrase  the key's passphrase
//	"text"      the text itself
//	sha256(a b) the raw SHA-256 of parts a and b concatenated
//
// Kraken: algorithm hmac-sha512, secret base64, message [path, sha256(nonce body)],
// output base64, header API-Sign. Binance: hmac-sha256, secret raw, message
// [query, body], output hex, query parameter signature.
type Sign struct {
	// Algorithm is hmac-sha256 or hmac-sha512.
	Algorithm string `yaml:"algorithm"`
	// Secret is how the key's secret is written: raw (its bytes are the HMAC
	// key), base64 or hex (decoded first).
	Secret string `yaml:"secret"`
	// Message lists the parts signed.
	Message []string `yaml:"message"`
	// Separator joins the parts; none when empty.
	Separator string `yaml:"separator"`
	// Output is hex or base64.
	Output string `yaml:"output"`
	// In and Name place the signature: a header, or a query parameter (added
	// last, after signing).
	In   string `yaml:"in"`
	Name string `yaml:"name"`
}

// parts is what a message may be built from, for one request.
type parts struct {
	method, path, query, body, nonce, timestamp, passphrase string
}

func (p parts) get(name string) (string, bool) {
	switch name {
	case "method":
		return p.method, true
	case "path":
		return p.path, true
	case "query":
		return p.query, true
	case "target":
		if p.query == "" {
			return p.path, true
		}
		return p.path + "?" + p.query, true
	case "body":
		return p.body, true
	case "nonce":
		return p.nonce, true
	case "timestamp":
		return p.timestamp, true
	case "passphrase":
		return p.passphrase, true
	}
	if len(name) >= 2 && strings.HasPrefix(name, `"`) && strings.HasSuffix(name, `"`) {
		return name[1 : len(name)-1], true
	}
	return "", false
}

// message assembles the signed message.
func (s *Sign) message(p parts) ([]byte, error) {
	var out []string
	for _, item := range s.Message {
		v, err := part(item, p)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return []byte(strings.Join(out, s.Separator)), nil
}

func part(item string, p parts) (string, error) {
	if inner, ok := strings.CutPrefix(item, "sha256("); ok && strings.HasSuffix(inner, ")") {
		h := sha256.New()
		for _, name := range strings.Fields(strings.TrimSuffix(inner, ")")) {
			v, ok := p.get(name)
			if !ok {
				return "", fmt.Errorf("unknown message part %q in %s", name, item)
			}
			h.Write([]byte(v))
		}
		return string(h.Sum(nil)), nil
	}
	v, ok := p.get(item)
	if !ok {
		return "", fmt.Errorf("unknown message part %q", item)
	}
	return v, nil
}

// signature returns the encoded HMAC of the message built from p.
func (s *Sign) signature(secret string, p parts) (string, error) {
	key, err := s.key(secret)
	if err != nil {
		return "", err
	}
	msg, err := s.message(p)
	if err != nil {
		return "", err
	}
	var h func() hash.Hash = sha256.New
	if s.Algorithm == "hmac-sha512" {
		h = sha512.New
	}
	m := hmac.New(h, key)
	m.Write(msg)
	sum := m.Sum(nil)
	if s.Output == "base64" {
		return base64.StdEncoding.EncodeToString(sum), nil
	}
	return hex.EncodeToString(sum), nil
}

// key decodes the secret as the profile says. Its error never holds the secret.
func (s *Sign) key(secret string) ([]byte, error) {
	switch s.Secret {
	case "base64":
		b, err := base64.StdEncoding.DecodeString(secret)
		if err != nil {
			return nil, fmt.Errorf("the key's secret is not base64, as the profile's sign.secret says (check the keys file)")
		}
		return b, nil
	case "hex":
		b, err := hex.DecodeString(secret)
		if err != nil {
			return nil, fmt.Errorf("the key's secret is not hex, as the profile's sign.secret says (check the keys file)")
		}
		return b, nil
	}
	return []byte(secret), nil
}

// CheckSecret reports a secret the profile cannot sign with (not base64 where it
// must be); the error never holds the secret.
func (p *Profile) CheckSecret(secret string) error {
	if p.Sign == nil {
		return nil
	}
	_, err := p.Sign.key(secret)
	return err
}

// CheckKeys reports a key the profile cannot use: where requests are signed,
// every key needs an id (the public key sent; without one the secret itself
// would leave) and a secret written as sign.secret says. Errors name the key,
// never its secret.
func (p *Profile) CheckKeys(ks []keys.Key) error {
	if p.Sign == nil {
		return nil
	}
	for _, k := range ks {
		if k.ID() == "" {
			return fmt.Errorf("%s: profile %q signs requests: key %s needs an id (keys file line: `%s id=PUBLIC_KEY secret=SECRET`), so that only the signature leaves, never the secret", p.Source, p.Name, k, k.Name())
		}
		if err := p.CheckSecret(k.Secret()); err != nil {
			return fmt.Errorf("%s: key %s: %w", p.Source, k, err)
		}
	}
	return nil
}

func (s *Sign) validate(v *validator, p *Profile) {
	if s.Algorithm != "hmac-sha256" && s.Algorithm != "hmac-sha512" {
		v.addf("sign.algorithm", "is %q; use hmac-sha256 or hmac-sha512", s.Algorithm)
	}
	if s.Secret != "" && s.Secret != "raw" && s.Secret != "base64" && s.Secret != "hex" {
		v.addf("sign.secret", "is %q; use raw, base64 or hex (how the keys file writes the secret)", s.Secret)
	}
	if s.Output != "hex" && s.Output != "base64" {
		v.addf("sign.output", "is %q; use hex or base64", s.Output)
	}
	if len(s.Message) == 0 {
		v.addf("sign.message", "must list the parts signed, such as [path, sha256(nonce body)]")
	}
	for _, item := range s.Message {
		if _, err := part(item, parts{}); err != nil {
			v.addf("sign.message", "%v: parts are method, path, query, target, body, nonce, timestamp, passphrase, \"text\" and sha256(parts…)", err)
		}
		if strings.Contains(item, "nonce") && p.Nonce == nil {
			v.addf("sign.message", "signs the nonce, but the profile places none: add nonce")
		}
		if strings.Contains(item, "timestamp") && p.Timestamp == nil {
			v.addf("sign.message", "signs the timestamp, but the profile places none: add timestamp")
		}
	}
	switch s.In {
	case InHeader, InQuery:
		if s.Name == "" {
			v.addf("sign.name", "must name the %s the signature goes in", s.In)
		}
		if s.In == InHeader && s.Name != "" && !wire.ValidHeaderName(s.Name) {
			v.addf("sign.name", "%q must be a header name, an RFC 7230 token", s.Name)
		}
	default:
		v.addf("sign.in", "is %q; use header or query", s.In)
	}
}
