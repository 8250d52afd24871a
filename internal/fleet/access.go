package fleet

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/internal/streams"
)

// Access is who may use the fleet's embedded NATS server: one user per role with
// that role's permissions (roles.Get), so a local run exercises the same rights as
// a deployment, and optionally TLS with client certificates from a throwaway CA.
// Each process connects as its own role; secrets reach it through files and its
// environment, never its arguments.
type Access struct {
	dir   string
	pki   *embedded.PKI
	users map[string]roleUser
}

// roleUser is how one role authenticates: a password, or an NKey seed file.
type roleUser struct {
	name, password, seedFile, seed string
}

// NewAccess creates a user for every role in dir (NKey seed files when nkeys is
// true, random passwords otherwise) and, when useTLS is true, a CA with server and
// client certificates.
func NewAccess(cfg *streams.Config, dir string, nkeyUsers, useTLS bool) (*Access, error) {
	a := &Access{dir: dir, users: map[string]roleUser{}}
	for _, name := range roles.Names() {
		u := roleUser{name: roles.DefaultUser(name)}
		if nkeyUsers {
			kp, err := nkeys.CreateUser()
			if err != nil {
				return nil, fmt.Errorf("create the %s NKey: %w", name, err)
			}
			seed, err := kp.Seed()
			if err != nil {
				return nil, fmt.Errorf("create the %s NKey: %w", name, err)
			}
			u.seed = string(seed)
			u.seedFile = filepath.Join(dir, name+".nk")
			if err := os.WriteFile(u.seedFile, seed, 0o600); err != nil {
				return nil, fmt.Errorf("write the %s NKey: %w", name, err)
			}
		} else {
			// Characters that JSON, URL and base64 encodings all change, so a leak
			// in any of those forms can be found.
			u.password = rand.Text() + `+/&<>"%=`
		}
		a.users[name] = u
	}
	if useTLS {
		pki, err := embedded.NewPKI(dir)
		if err != nil {
			return nil, err
		}
		a.pki = pki
	}
	return a, nil
}

// Users returns the server side: one user per role with its permissions, which
// name the user as the server knows it (an NKey user by its public key).
func (a *Access) Users(cfg *streams.Config) ([]embedded.User, error) {
	var out []embedded.User
	for _, name := range roles.Names() {
		u := a.users[name]
		eu := embedded.User{Name: u.name, Password: u.password}
		user := u.name
		if u.seed != "" {
			kp, err := nkeys.FromSeed([]byte(u.seed))
			if err != nil {
				return nil, fmt.Errorf("NKey of %s: %w", name, err)
			}
			if eu.NKey, err = kp.PublicKey(); err != nil {
				return nil, fmt.Errorf("NKey of %s: %w", name, err)
			}
			user = eu.NKey
		}
		r, err := roles.For(cfg, name, user)
		if err != nil {
			return nil, err
		}
		eu.Publish, eu.Subscribe, eu.Responses = r.Publish, r.Subscribe, r.Responses
		out = append(out, eu)
	}
	return out, nil
}

// TLS returns the server's TLS files, or nil without TLS.
func (a *Access) TLS() *embedded.TLS {
	if a.pki == nil {
		return nil
	}
	return &embedded.TLS{Cert: a.pki.ServerCert, Key: a.pki.ServerKey, CA: a.pki.CA}
}

// Args returns the connection flags of a process running as role: files only.
func (a *Access) Args(role string) []string {
	var args []string
	if u := a.users[role]; u.seedFile != "" {
		args = append(args, "--nkey", u.seedFile)
	}
	if a.pki != nil {
		args = append(args, "--tlsca", a.pki.CA, "--tlscert", a.pki.ClientCert, "--tlskey", a.pki.ClientKey)
	}
	return args
}

// Env returns the environment of a process running as role: its user and
// password, and every other NATS variable emptied so the caller's own settings
// (a NATS_CONTEXT, say) cannot mix in.
func (a *Access) Env(role string) []string {
	var env []string
	for _, name := range cli.EnvNames() {
		env = append(env, name+"=")
	}
	if u := a.users[role]; u.password != "" {
		env = append(env, "RATEFLEET_NATS_USER="+u.name, "RATEFLEET_NATS_PASSWORD="+u.password)
	}
	return env
}

// Connection returns how this process connects as role.
func (a *Access) Connection(url, role string) (cli.Connection, error) {
	u := a.users[role]
	n := cli.NATS{URL: url, NKey: u.seedFile}
	if u.password != "" {
		n.User, n.Password = u.name, u.password
	}
	if a.pki != nil {
		n.TLSCA, n.TLSCert, n.TLSKey = a.pki.CA, a.pki.ClientCert, a.pki.ClientKey
	}
	return n.Resolve(func(string) string { return "" }, nil)
}

// Secrets returns every secret of the run: passwords and NKey seeds, for tests
// that look for them in output.
func (a *Access) Secrets() []string {
	var out []string
	for _, u := range a.users {
		for _, s := range []string{u.password, u.seed} {
			if s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// PKI returns the throwaway certificate authority, or nil without TLS.
func (a *Access) PKI() *embedded.PKI { return a.pki }
