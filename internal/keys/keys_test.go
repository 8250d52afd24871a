package keys_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/wire"
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
		{"duplicate name", "a=x\na=y", nil, `test line 2: name: already used on line 1`},
		{"empty secret", "a=", nil, `test line 1: secret: empty`},
		{"bad name", "a.b=x", nil, `test line 1: name: may hold only`},
		{"nothing", "# none\n", nil, "no API keys"},
		{"bare base64 secret with padding", "abc==\nk2=def=", []string{"key1", "k2"}, ""},
		{"spaces around the = of name=secret", "a = x\nb =y\nc= z", []string{"a", "b", "c"}, ""},
		{"signing key", "kr id=PUB1 secret=kQH5HW/8p1uGOVjb== passphrase=pp", []string{"kr"}, ""},
		{"duplicate secret", "a=x\nb=x", nil, `test line 2: secret: the same as on line 1`},
		{"duplicate id", "a id=P secret=x\nb id=P secret=y", nil, `test line 2: id: the same as on line 1`},
		{"unknown field", "a id=P secrt=x", nil, `test line 1: word 3: not a field of a key's line`},
		{"signing key without secret", "a id=P", nil, `test line 1: secret: missing`},
		{"a field twice", "a id=P id=Q secret=x", nil, `test line 1: id: given twice`},
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

// TestParse_ErrorsNeverHoldTheLine feeds lines that are wrong in every way a
// secret can end up where a name or a field was expected, and checks that the
// error names the file, the line and the field, and holds no six characters in a
// row of the secret.
func TestParse_ErrorsNeverHoldTheLine(t *testing.T) {
	const b64 = "c2VjcmV0LWtleS0xMjM0NTY3OA=" // base64 with one = of padding
	tests := []struct {
		name, lines, secret, want string
	}{
		{"a bare base64 secret with one = of padding", "# keys\n" + b64, b64, "keys line 2: secret: empty"},
		{"a padded secret after a name and a space", "k " + b64, b64, "keys line 1: word 2: not field=value"},
		{"missing secret=", "k id=PUB " + secret, secret, "keys line 1: word 3: not field=value"},
		{"missing secret= before a padded secret", "k id=PUB " + b64, b64, "keys line 1: word 3: not field=value"},
		{"spaces around a field's =", "k id=PUB secret = " + secret, secret, "keys line 1: word 3: not field=value"},
		{"a space after a field's =", "k id=PUB secret= " + secret, secret, "keys line 1: word 3: not field=value"},
		{"a space before a field's =", "k id=PUB secret =" + secret, secret, "keys line 1: word 3: not field=value"},
		{"a secret where the name goes", "kQH5HW/8p1uGOVjbgWA7 id=PUB secret=x", "kQH5HW/8p1uGOVjbgWA7", "keys line 1: name: may hold only"},
		{"a secret with = inside as the name", "ab/cd" + secret + "=x", secret, "keys line 1: name: may hold only"},
		{"a secret holding = as a field", "k id=PUB " + secret[:10] + "=" + secret[10:], secret, "keys line 1: word 3: not a field of a key's line"},
		{"a repeated secret", "a=" + secret + "\nb=" + secret, secret, "keys line 2: secret: the same as on line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := keys.Parse("keys", strings.NewReader(tt.lines))
			require.ErrorContains(t, err, tt.want)
			for i := 0; i+6 <= len(tt.secret); i++ {
				require.NotContains(t, err.Error(), tt.secret[i:i+6], "the error holds part of the secret")
			}
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

func TestParse_AccountsAndLabels(t *testing.T) {
	tests := []struct {
		line    string
		account string
		labels  []string
		err     string
	}{
		{line: "k=s1", account: "k"},
		{line: "k secret=s1 account=main", account: "main"},
		{line: "k id=P secret=s1 account=sub-a labels=spot,margin", account: "sub-a", labels: []string{"spot", "margin"}},
		{line: "k secret=s1 labels=gpt_4", account: "k", labels: []string{"gpt_4"}},
		{line: "k secret=s1 account=a.b", err: "account"},
		{line: "k secret=s1 labels=a,,b", err: "labels"},
		{line: "k secret=s1 labels=a/b", err: "labels"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			ks, err := keys.Parse("test", strings.NewReader(tt.line))
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				require.NotContains(t, err.Error(), "s1")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.account, ks[0].Account())
			require.Equal(t, tt.labels, ks[0].Labels())
			for _, l := range tt.labels {
				require.True(t, ks[0].HasLabel(l))
			}
			require.False(t, ks[0].HasLabel("other"))
		})
	}
}

func TestKey_ServesExactlyItsRoutes(t *testing.T) {
	ks, err := keys.Parse("test", strings.NewReader("k1 secret=a account=main labels=spot,gpt4\nk2 secret=b account=main\nk3 secret=c\n"))
	require.NoError(t, err)
	label := func(n string) wire.Route { return wire.Route{Kind: wire.RouteLabel, Name: n} }
	acct := func(n string) wire.Route { return wire.Route{Kind: wire.RouteAccount, Name: n} }
	key := func(n string) wire.Route { return wire.Route{Kind: wire.RouteKey, Name: n} }
	tests := []struct {
		route wire.Route
		serve []bool // k1, k2, k3
	}{
		{wire.Any, []bool{true, true, true}},
		{label("spot"), []bool{true, false, false}},
		{label("gpt4"), []bool{true, false, false}},
		{label("other"), []bool{false, false, false}},
		{acct("main"), []bool{true, true, false}},
		{acct("k3"), []bool{false, false, false}}, // a key naming no account nor label serves no route
		{key("k3"), []bool{false, false, false}},
		{key("k2"), []bool{false, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.route.Token(), func(t *testing.T) {
			for i, k := range ks {
				require.Equal(t, tt.serve[i], k.Serves(tt.route), k.Name())
				require.Equal(t, tt.serve[i], slices.Contains(k.Routes(), tt.route), "%s lists its routes", k.Name())
			}
		})
	}
	require.Equal(t, []wire.Route{key("k1"), acct("main"), label("spot"), label("gpt4"), wire.Any, key("k2")}, keys.RoutesOf(ks))
}
