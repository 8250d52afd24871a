package cli

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/jsm.go/natscontext"
	"github.com/nats-io/nats.go"

	"github.com/ratefleet/ratefleet/wire"
)

// NATS is the connection settings of a command, as the nats CLI names them.
// Register adds its flags; Resolve merges them with the environment and a saved
// context into a Connection. Each field holds its flag's value; empty means unset.
type NATS struct {
	URL, Context                 string
	Creds, NKey                  string
	User, Password, PasswordFile string
	Token, TokenFile             string
	TLSCert, TLSKey, TLSCA       string
	InboxPrefix                  string
	// Files is --insecure-file-mode: whether a file of secrets (--creds, --nkey,
	// --password-file, --token-file, --tlskey) that its group or others may read
	// is refused or only warned about.
	Files SecretFiles
}

// setting names one connection setting: its flag and environment variables.
type setting struct {
	flag   string
	envs   []string // in order of precedence
	secret bool
	get    func(*NATS) *string
	ctx    func(*natscontext.Context) string
}

// settings lists every connection setting in the order --help shows them.
func settings() []setting {
	return []setting{
		{"nats", []string{"RATEFLEET_NATS_URL", "NATS_URL"}, false, func(n *NATS) *string { return &n.URL }, nil},
		{"context", []string{"RATEFLEET_NATS_CONTEXT", "NATS_CONTEXT"}, false, func(n *NATS) *string { return &n.Context }, nil},
		{"creds", []string{"RATEFLEET_NATS_CREDS", "NATS_CREDS"}, false, func(n *NATS) *string { return &n.Creds }, (*natscontext.Context).Creds},
		{"nkey", []string{"RATEFLEET_NATS_NKEY", "NATS_NKEY"}, false, func(n *NATS) *string { return &n.NKey }, (*natscontext.Context).NKey},
		{"user", []string{"RATEFLEET_NATS_USER", "NATS_USER"}, false, func(n *NATS) *string { return &n.User }, (*natscontext.Context).User},
		{"password", []string{"RATEFLEET_NATS_PASSWORD", "NATS_PASSWORD"}, true, func(n *NATS) *string { return &n.Password }, (*natscontext.Context).Password},
		{"password-file", []string{"RATEFLEET_NATS_PASSWORD_FILE", "NATS_PASSWORD_FILE"}, false, func(n *NATS) *string { return &n.PasswordFile }, nil},
		{"token", []string{"RATEFLEET_NATS_TOKEN", "NATS_TOKEN"}, true, func(n *NATS) *string { return &n.Token }, (*natscontext.Context).Token},
		{"token-file", []string{"RATEFLEET_NATS_TOKEN_FILE", "NATS_TOKEN_FILE"}, false, func(n *NATS) *string { return &n.TokenFile }, nil},
		{"tlscert", []string{"RATEFLEET_NATS_TLSCERT", "NATS_CERT"}, false, func(n *NATS) *string { return &n.TLSCert }, (*natscontext.Context).Certificate},
		{"tlskey", []string{"RATEFLEET_NATS_TLSKEY", "NATS_KEY"}, false, func(n *NATS) *string { return &n.TLSKey }, (*natscontext.Context).Key},
		{"tlsca", []string{"RATEFLEET_NATS_TLSCA", "NATS_CA"}, false, func(n *NATS) *string { return &n.TLSCA }, (*natscontext.Context).CA},
		{"inbox-prefix", []string{"RATEFLEET_NATS_INBOX_PREFIX", "NATS_INBOX_PREFIX"}, false, func(n *NATS) *string { return &n.InboxPrefix }, (*natscontext.Context).InboxPrefix},
	}
}

// EnvNames returns every environment variable Resolve reads, so a parent process
// can keep its own out of a child's environment.
func EnvNames() []string {
	var out []string
	for _, s := range settings() {
		out = append(out, s.envs...)
	}
	return out
}

// Register adds the connection flags to fs: --nats (also -s and --server),
// --context, --creds, --nkey, --user, --password, --password-file, --token,
// --token-file, --tlscert, --tlskey, --tlsca, --inbox-prefix and
// --insecure-file-mode. No default shows a value from the environment, so --help
// never prints a secret.
func (n *NATS) Register(fs *flag.FlagSet) {
	help := map[string]string{
		"nats":          "NATS server `URLs`, comma-separated (default $NATS_URL, else " + DefaultURL + "); user information in a URL is never printed",
		"context":       "use the nats CLI's saved context `NAME` for what no flag or variable sets",
		"creds":         "NATS user credentials `file` (JWT and seed, as nsc writes it)",
		"nkey":          "NATS user NKey seed `file`",
		"user":          "NATS user `name`",
		"password":      "NATS password (visible in ps: prefer $NATS_PASSWORD or --password-file)",
		"password-file": "read the NATS password from `file`",
		"token":         "NATS authentication token (visible in ps: prefer $NATS_TOKEN or --token-file)",
		"token-file":    "read the NATS token from `file`",
		"tlscert":       "TLS client certificate `file` (PEM)",
		"tlskey":        "TLS client private key `file` (PEM)",
		"tlsca":         "TLS certificate authority `file` (PEM) that signed the server's certificate",
		"inbox-prefix":  "`prefix` of reply subjects (default _INBOX_<user> for a named user, the only inbox ratefleet's roles let it read; _INBOX otherwise)",
	}
	for _, s := range settings() {
		text := help[s.flag]
		if len(s.envs) > 0 && s.flag != "nats" {
			text += " (or $" + strings.Join(s.envs, ", $") + ")"
		}
		fs.StringVar(s.get(n), s.flag, "", text)
	}
	fs.StringVar(&n.URL, "s", "", "same as --nats")
	fs.StringVar(&n.URL, "server", "", "same as --nats")
	n.Files.Register(fs)
}

// Connection is a resolved way to reach NATS.
type Connection struct {
	// URL lists the servers; it may hold user information, so print Redacted.
	URL string
	// Options carry the credentials and TLS settings for nats.Connect.
	Options []nats.Option
	// Auth says how the client authenticates, without any secret: "user alice",
	// "credentials file x.creds", "token", "none".
	Auth string
	// Context is the saved context used, if any.
	Context string
	// User is the name the server knows the user by, as ratefleet's roles name
	// it (wire.UserOf): a user name, an NKey public key or a credentials file's
	// name; empty for a token or none.
	User string
}

// Redacted returns the server URLs without user information.
func (c Connection) Redacted() string { return RedactURL(c.URL) }

// Resolve merges the flags with the environment (getenv, normally os.Getenv) and a
// saved context, checks that every named file exists and that no file of secrets
// is open to its group or others (SecretFiles; a warning goes to log), and
// returns the connection. Errors name the setting at fault.
func (n *NATS) Resolve(getenv func(string) string, log *slog.Logger) (Connection, error) {
	// levels[0] is the flags, then each environment variable in turn, then the
	// context; a setting takes the first level that has it.
	var levels []NATS
	var names []string
	levels, names = append(levels, *n), append(names, "--")
	for i := range 2 {
		var l NATS
		for _, s := range settings() {
			*s.get(&l) = getenv(s.envs[i])
		}
		levels, names = append(levels, l), append(names, map[int]string{0: "$RATEFLEET_NATS_", 1: "$NATS_"}[i])
	}
	var v NATS
	from := map[string]string{}
	pick := func(s setting, allowed func(int) bool) {
		for i, l := range levels {
			if val := *s.get(&l); val != "" && allowed(i) {
				*s.get(&v) = val
				from[s.flag] = sourceName(names[i], s)
				return
			}
		}
	}
	all := func(int) bool { return true }
	for _, s := range settings() {
		if s.flag == "context" {
			pick(s, all)
		}
	}
	c := Connection{Context: v.Context}
	if v.Context != "" {
		ctx, err := natscontext.New(v.Context, true)
		if err != nil {
			return c, fmt.Errorf("%s %q: %w (list the saved contexts with `nats context ls`)", from["context"], v.Context, err)
		}
		var l NATS
		for _, s := range settings() {
			if s.ctx != nil {
				*s.get(&l) = s.ctx(ctx)
			}
		}
		l.URL = ctx.ServerURL()
		levels, names = append(levels, l), append(names, "context "+v.Context+" ")
	}
	// The way to authenticate comes whole from the first level that names one, so
	// a flag's --user is not mixed with a variable's creds; a password may come
	// from any level.
	method := len(levels)
	for i, l := range levels {
		if l.Creds != "" || l.NKey != "" || l.User != "" || l.Token != "" || l.TokenFile != "" {
			method = i
			break
		}
	}
	for _, s := range settings() {
		switch s.flag {
		case "context":
		case "creds", "nkey", "user", "token", "token-file":
			pick(s, func(i int) bool { return i == method })
		default:
			pick(s, all)
		}
	}
	if v.URL == "" {
		v.URL = DefaultURL
	}
	c.URL = v.URL
	secretFile := func(name, path string) error { return n.Files.Check(log, from[name], path) }
	var err error
	if v.PasswordFile != "" {
		if err := secretFile("password-file", v.PasswordFile); err != nil {
			return c, err
		}
		if v.Password, err = readSecretFile(from["password-file"], v.PasswordFile); err != nil {
			return c, err
		}
	}
	if v.TokenFile != "" {
		if err := secretFile("token-file", v.TokenFile); err != nil {
			return c, err
		}
		if v.Token, err = readSecretFile(from["token-file"], v.TokenFile); err != nil {
			return c, err
		}
	}
	methods := 0
	for _, set := range []bool{v.Creds != "", v.NKey != "", v.User != "", v.Token != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return c, UsageError{Err: fmt.Errorf("more than one way to authenticate to NATS is set (--creds, --nkey, --user, --token): keep one")}
	}
	if v.Password != "" && v.User == "" && (v.Creds != "" || v.NKey != "" || v.Token != "") {
		v.Password = "" // another way to authenticate was chosen over the user's
	}
	if v.Password != "" && v.User == "" {
		return c, UsageError{Err: fmt.Errorf("a NATS password is set (%s) but no user: pass --user or $NATS_USER", from["password"])}
	}
	checkFile := func(name, path string) error {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%s %s: %w", from[name], path, err)
		}
		return nil
	}
	c.Auth = "none"
	switch {
	case v.Creds != "":
		if err := checkFile("creds", v.Creds); err != nil {
			return c, err
		}
		if err := secretFile("creds", v.Creds); err != nil {
			return c, err
		}
		c.Options = append(c.Options, nats.UserCredentials(v.Creds))
		c.Auth = "credentials file " + v.Creds
	case v.NKey != "":
		if err := checkFile("nkey", v.NKey); err != nil {
			return c, err
		}
		if err := secretFile("nkey", v.NKey); err != nil {
			return c, err
		}
		opt, err := nats.NkeyOptionFromSeed(v.NKey)
		if err != nil {
			return c, fmt.Errorf("%s %s: %w (want an NKey user seed, SU...)", from["nkey"], v.NKey, err)
		}
		c.Options = append(c.Options, opt)
		c.Auth = "nkey file " + v.NKey
	case v.User != "":
		c.Options = append(c.Options, nats.UserInfo(v.User, v.Password))
		c.Auth = "user " + v.User
	case v.Token != "":
		c.Options = append(c.Options, nats.Token(v.Token))
		c.Auth = "token"
	}
	if (v.TLSCert == "") != (v.TLSKey == "") {
		return c, UsageError{Err: fmt.Errorf("a TLS client certificate needs both --tlscert and --tlskey")}
	}
	if v.TLSCert != "" {
		for _, f := range []struct{ name, path string }{{"tlscert", v.TLSCert}, {"tlskey", v.TLSKey}} {
			if err := checkFile(f.name, f.path); err != nil {
				return c, err
			}
		}
		if err := secretFile("tlskey", v.TLSKey); err != nil {
			return c, err
		}
		c.Options = append(c.Options, nats.ClientCert(v.TLSCert, v.TLSKey))
	}
	if v.TLSCA != "" {
		if err := checkFile("tlsca", v.TLSCA); err != nil {
			return c, err
		}
		c.Options = append(c.Options, nats.RootCAs(v.TLSCA))
	}
	// A named user's answers come to its own inbox prefix, the only one its
	// role lets it subscribe to (roles: no user may read another's inbox).
	o := nats.GetDefaultOptions()
	for _, opt := range c.Options {
		_ = opt(&o) // only the identity is read here; nats.Connect reports errors
	}
	c.User = wire.UserOf(&o)
	if v.InboxPrefix == "" && c.User != "" {
		if _, err := wire.ParseOwner(c.User); err == nil {
			v.InboxPrefix = wire.InboxPrefix(c.User)
		}
	}
	if v.InboxPrefix != "" {
		c.Options = append(c.Options, nats.CustomInboxPrefix(v.InboxPrefix))
	}
	return c, nil
}

// sourceName names where a setting came from, for errors: "--creds",
// "$NATS_CREDS", "context prod creds".
func sourceName(level string, s setting) string {
	switch {
	case level == "--":
		return "--" + s.flag
	case strings.HasPrefix(level, "$RATEFLEET"):
		return "$" + s.envs[0]
	case strings.HasPrefix(level, "$"):
		return "$" + s.envs[1]
	}
	return level + s.flag
}
