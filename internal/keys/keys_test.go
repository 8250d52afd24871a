package keys_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/keys"
)

const secret = "UT4NHL1J796WCHULA1750MXYF9F5JYA6"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr string
	}{
		{"bare secrets get positional names", secret + "\n\n# comment\nOTHER", []string{"key1", "key2"}, ""},
		{"named", "alpha=" + secret + "\nbeta = OTHER", []string{"alpha", "beta"}, ""},
		{"duplicate name", "a=x\na=y", nil, `line 2: key name "a" is used twice`},
		{"empty secret", "a=", nil, `line 1: key "a" has an empty secret`},
		{"bad name", "a.b=x", nil, `line 1: key name "a.b"`},
		{"nothing", "# none\n", nil, "no API keys"},
		{"bare base64 secret with padding", "abc==\nk2=def=", []string{"key1", "k2"}, ""},
		{"signing key", "kr id=PUB1 secret=kQH5HW/8p1uGOVjb== passphrase=pp", []string{"kr"}, ""},
		{"duplicate secret", "a=x\nb=x", nil, `line 2: key "b" repeats the secret of key "a"`},
		{"duplicate id", "a id=P secret=x\nb id=P secret=y", nil, `line 2: key "b" repeats the id of key "a"`},
		{"unknown field", "a id=P secrt=x", nil, `unknown field "secrt"`},
		{"signing key without secret", "a id=P", nil, `key "a" has an empty secret`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := keys.Parse("test", strings.NewReader(tt.in))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), secret)
				return
			}
			require.NoError(t, err)
			var names []string
			for _, k := range ks {
				names = append(names, k.Name())
			}
			require.Equal(t, tt.want, names)
		})
	}
}

func TestLoad_FromFileAndEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(path, []byte("k="+secret+"\n"), 0o600))
	ks, err := keys.Load(path, func(string) string { return "" })
	require.NoError(t, err)
	require.Equal(t, secret, ks[0].Secret())

	ks, err = keys.Load("", func(v string) string {
		require.Equal(t, keys.EnvVar, v)
		return "a=1,b=2"
	})
	require.NoError(t, err)
	require.Len(t, ks, 2)

	_, err = keys.Load("", func(string) string { return "" })
	require.ErrorIs(t, err, keys.ErrNoKeys)
	require.ErrorContains(t, err, "--keys-file")
}

func TestKey_NeverPrintsItsSecret(t *testing.T) {
	k := keys.New("key1", secret)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("claimed", "key", k)
	out := buf.String() + fmt.Sprint(k) + fmt.Sprintf("%v %+v %s", k, k, k)
	require.NotContains(t, out, secret)
	require.Contains(t, buf.String(), `"name":"key1"`)
	require.Len(t, k.Fingerprint(), 8)
	require.NotEqual(t, k.Fingerprint(), keys.New("key2", "other").Fingerprint())
}

func TestParse_ReadsEveryPartOfASigningKey(t *testing.T) {
	tests := []struct {
		line                         string
		name, id, secret, passphrase string
		apiKey                       string
	}{
		{"abc==", "key1", "", "abc==", "", "abc=="},
		{"k=abc==", "k", "", "abc==", "", "abc=="},
		{"k id=PUB secret=c2VjcmV0== passphrase=p=q", "k", "PUB", "c2VjcmV0==", "p=q", "PUB"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			ks, err := keys.Parse("test", strings.NewReader(tt.line))
			require.NoError(t, err)
			k := ks[0]
			require.Equal(t, []string{tt.name, tt.id, tt.secret, tt.passphrase, tt.apiKey},
				[]string{k.Name(), k.ID(), k.Secret(), k.Passphrase(), k.APIKey()})
			require.NotContains(t, fmt.Sprintf("%v %+v", k, k), tt.secret)
		})
	}
}
