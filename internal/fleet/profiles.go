package fleet

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/profile"
)

// Setup is what a fleet needs to run one shape of upstream API: the workers'
// profile file, the keys, and the simulator's flags.
type Setup struct {
	Profile      string
	Keys         []keys.Key
	ExchangeArgs []string
	dir          string
}

// Close removes the profile file Setup wrote, if any.
func (s Setup) Close() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// SetupFor returns the setup of a named shape: reference (the default), signed
// (Kraken's signing scheme, the simulator's POST /api/private), per-minute (an
// LLM API's shape: 60 a minute per key, a bearer key, Retry-After), or the path
// of a profile file, run with the reference keys.
func SetupFor(name string) (Setup, error) {
	var doc string
	var s Setup
	switch name {
	case "", "reference":
		return Setup{}, nil
	case "signed":
		doc, s.Keys = profile.SignedYAML, exchange.SignedKeys()
	case "per-minute":
		doc, s.ExchangeArgs = profile.PerMinuteYAML, []string{"--limit", "60", "--window", "1m", "--block-after", "0"}
	default:
		if _, err := profile.Load(name); err != nil {
			return Setup{}, fmt.Errorf("--profile: use reference, signed, per-minute or a profile file: %w", err)
		}
		return Setup{Profile: name}, nil
	}
	p, err := WithProfile(name, doc)
	p.Keys, p.ExchangeArgs = s.Keys, s.ExchangeArgs
	return p, err
}

// WithProfile returns a setup whose workers load the profile doc, written to a
// file of its own (named for name) that Close removes.
func WithProfile(name, doc string) (Setup, error) {
	dir, err := os.MkdirTemp("", "ratefleet-profile-")
	if err != nil {
		return Setup{}, fmt.Errorf("profile file: %w", err)
	}
	s := Setup{dir: dir, Profile: filepath.Join(dir, name+".yaml")}
	if err := os.WriteFile(s.Profile, []byte(doc), 0o600); err != nil {
		s.Close()
		return Setup{}, fmt.Errorf("profile file: %w", err)
	}
	return s, nil
}
