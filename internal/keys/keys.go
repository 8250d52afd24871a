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
	"strings"
)

// EnvVar is the environment variable read when no keys file is given: a comma- or
// newline-separated list of `name=secret` or bare secrets.
const EnvVar = "RATEFLEET_KEYS"

// ErrNoKeys is returned when no key could be loaded.
var ErrNoKeys = errors.New("no API keys")

// Key is one upstream API key.
type Key struct {
	name        string
	fingerprint string
	secret      string
}

// New returns a key with the given name and secret.
func New(name, secret string) Key {
	sum := sha256.Sum256([]byte(secret))
	return Key{name: name, fingerprint: hex.EncodeToString(sum[:4]), secret: secret}
}

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

// Parse reads one key a line: `name=secret`, or a bare secret named key<N> after its
// position. Blank lines and lines starting with # are skipped. Names must be unique
// and usable as NATS KV keys.
func Parse(source string, r io.Reader) ([]Key, error) {
	var out []Key
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, secret, named := strings.Cut(text, "=")
		if !named {
			name, secret = fmt.Sprintf("key%d", len(out)+1), text
		}
		name, secret = strings.TrimSpace(name), strings.TrimSpace(secret)
		switch {
		case secret == "":
			return nil, fmt.Errorf("%s line %d: key %q has an empty secret", source, line, name)
		case !validName(name):
			return nil, fmt.Errorf("%s line %d: key name %q may hold only letters, digits, '-' and '_'", source, line, name)
		case seen[name]:
			return nil, fmt.Errorf("%s line %d: key name %q is used twice; names must be unique", source, line, name)
		}
		seen[name] = true
		out = append(out, New(name, secret))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read API keys from %s: %w", source, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w in %s", ErrNoKeys, source)
	}
	return out, nil
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
