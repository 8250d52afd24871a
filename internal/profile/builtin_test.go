package profile_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/profile"
)

func TestBuiltin_EveryProfileIsValid(t *testing.T) {
	require.Equal(t, []string{"reference", "signed", "per-minute", "binance", "kraken", "llm"}, profile.BuiltinNames())
	for _, name := range profile.BuiltinNames() {
		t.Run(name, func(t *testing.T) {
			p, err := profile.Builtin(name)
			require.NoError(t, err)
			require.Equal(t, name, p.Name)
			doc, err := profile.BuiltinYAML(name)
			require.NoError(t, err)
			require.NotEmpty(t, doc)
		})
	}
	_, err := profile.Builtin("bitmex")
	require.ErrorIs(t, err, profile.ErrUnknownBuiltin)
	_, err = profile.Builtin("../profile")
	require.ErrorIs(t, err, profile.ErrUnknownBuiltin)
}

func TestBuiltin_KrakenAnswersAreItsOwn(t *testing.T) {
	p, err := profile.Builtin("kraken")
	require.NoError(t, err)
	tests := []struct {
		body string
		want profile.Class
	}{
		{`{"error":[],"result":{"ZUSD":"10.0"}}`, profile.Done},
		{`{"error":["EAPI:Rate limit exceeded"]}`, profile.RateLimited},
		{`{"error":["EAPI:Invalid nonce"]}`, profile.BadNonce},
		{`{"error":["EAPI:Invalid key"]}`, profile.KeyUnusable},
		{`{"error":["EService:Unavailable"]}`, profile.RetryLater},
		{`{"error":["EOrder:Insufficient funds"]}`, profile.Done},
		{`<html>502 Bad Gateway</html>`, profile.Gateway},
	}
	for _, tt := range tests {
		got, _ := p.Classify(200, []byte(tt.body))
		require.Equal(t, tt.want, got, tt.body)
	}
}
