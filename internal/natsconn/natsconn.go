// Package natsconn connects a ratefleet command to NATS and checks the server
// against streams.yaml, or, for the admin, applies it. Errors name the server
// without its user information and say what to do.
package natsconn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet"
	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// DefaultURL is where commands look for NATS unless told otherwise.
const DefaultURL = cli.DefaultURL

// checkTimeout bounds applying or checking the declarations, so a server that
// never answers (or a user who may not ask) ends the command instead of hanging.
const checkTimeout = 30 * time.Second

// Options says where to connect and which declarations to apply.
type Options struct {
	// URL lists the servers, comma-separated. It may hold user information; it is
	// printed only without it.
	URL string
	// Connect carries credentials and TLS settings (see cli.NATS.Resolve).
	Connect []nats.Option
	// Auth describes the credentials for errors, without any secret ("user alice").
	Auth string
	// Name identifies the client in the server's connection list.
	Name string
	// StreamsFile is the streams.yaml to apply; the shipped one when empty.
	StreamsFile string
	// CheckOnly verifies the declarations instead of applying them: nothing is
	// created or updated, and a difference is an error. Every role but the admin
	// checks; only the admin applies.
	CheckOnly bool
	// Routes are the keys, accounts and labels requests may name, each given
	// consumers of its own (streams.Config.Routes): the admin passes those of
	// the keys file. Others leave it empty and check only what every fleet has.
	Routes []wire.Route
	// Priorities declares the consumers of urgent requests, as streams.yaml's
	// requests.consumer.priorities does.
	Priorities bool
	// Logger receives connection events; slog.Default() when nil.
	Logger *slog.Logger
}

// Conn is a connection with JetStream and the applied configuration.
type Conn struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Streams *streams.Config
	// User is the name the server knows the connection's user by
	// (wire.UserOf); empty without a user.
	User string
}

// LoadStreams reads the named streams.yaml, or the shipped one when path is empty.
func LoadStreams(path string) (*streams.Config, error) {
	if path == "" {
		return streams.Parse("streams.yaml (built in)", ratefleet.DefaultStreams())
	}
	return streams.Load(path)
}

// Open connects, then applies (or checks) the stream declarations. The connection
// reconnects forever; the caller closes it.
func Open(ctx context.Context, o Options) (*Conn, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg, err := LoadStreams(o.StreamsFile)
	if err != nil {
		return nil, err
	}
	cfg.Routes = o.Routes
	cfg.Requests.Consumer.Priorities = cfg.Requests.Consumer.Priorities || o.Priorities
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	url := o.URL
	if url == "" {
		url = DefaultURL
	}
	shown := cli.RedactURL(url)
	if o.Auth != "" && o.Auth != "none" {
		shown += " as " + o.Auth
	}
	// A permission the server refuses comes back asynchronously; it ends the check
	// at once (instead of its timeout) and is logged afterwards.
	refused := make(chan error, 1)
	opts := append([]nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", "url", cli.RedactURL(c.ConnectedUrl())) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case refused <- err:
				default:
				}
				log.Warn("NATS refused an operation: the user's permissions lack it (compare with `streams roles`)", "err", err)
				return
			}
			log.Warn("NATS error", "err", err)
		}),
	}, o.Connect...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (%s)", shown, redact(err, url), connectHint(err))
	}
	if err := cfg.CheckPayload(nc.MaxPayload(), graveyard.EntryOverhead); err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS at %s: %w", shown, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open JetStream: %w", err)
	}
	apply := cfg.Apply
	if o.CheckOnly {
		apply = cfg.Check
	}
	actx, cancel := context.WithTimeoutCause(ctx, checkTimeout, fmt.Errorf("no answer from JetStream at %s within %s (is JetStream enabled for this account?)", shown, checkTimeout))
	defer cancel()
	actx, refuse := context.WithCancelCause(actx)
	go func() {
		select {
		case err := <-refused:
			refuse(err)
		case <-actx.Done():
		}
	}()
	res, err := apply(actx, js)
	if err != nil {
		if cause := context.Cause(actx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		nc.Close()
		what := "apply"
		if o.CheckOnly {
			what = "check"
		}
		if errors.Is(err, nats.ErrPermissionViolation) {
			return nil, fmt.Errorf("%s %s at %s: %w (the NATS user lacks a permission its role needs: compare its permissions with `streams roles`)", what, cfg.Source, shown, err)
		}
		return nil, fmt.Errorf("%s %s: %w", what, cfg.Source, err)
	}
	for _, ch := range res {
		if ch.Action != streams.Unchanged {
			log.Info("applied stream declaration", "kind", ch.Kind, "name", ch.Name, "action", string(ch.Action))
		}
	}
	return &Conn{NC: nc, JS: js, Streams: cfg, User: wire.UserOf(&nc.Opts)}, nil
}

// Close drains the connection, letting pending acks and publishes go out.
func (c *Conn) Close() {
	if err := c.NC.Drain(); err != nil {
		c.NC.Close()
	}
}

// redactedError is an error told without the user information of a URL in its
// message; errors.Is and errors.As still see the error it stands for.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// redact returns err, from connecting to the servers of list, with a message
// free of their user information. A URL that does not parse is told in words of
// its own: url.Error quotes the URL, and may quote a piece of its password as a
// bad port or escape.
func redact(err error, list string) error {
	if !strings.Contains(list, "@") {
		return err
	}
	var ue *neturl.Error
	if errors.As(err, &ue) {
		return redactedError{fmt.Sprintf("%s %s: not a valid URL (the details are left out: they may quote its password)", ue.Op, cli.RedactURL(ue.URL)), err}
	}
	msg := err.Error()
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, p, cli.RedactURL(p))
		if at := strings.LastIndex(p, "@"); at >= 0 {
			user := p[:at+1]
			if i := strings.Index(user, "://"); i >= 0 {
				user = user[i+3:]
			}
			msg = strings.ReplaceAll(msg, user, "")
		}
	}
	if msg == err.Error() {
		return err
	}
	return redactedError{msg, err}
}

// connectHint says what to do about a failed connection.
func connectHint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return "the server refused these credentials: check --user/--password, --creds, --nkey or --token"
	case errors.As(err, &unknownCA):
		return "the server's certificate is not signed by a trusted authority: pass the CA that signed it with --tlsca"
	case errors.As(err, &invalid):
		return "the server's certificate is not valid now or not for this use: check it, or --tlsca"
	case errors.As(err, &hostname):
		return "the server's certificate does not name this host: connect by a name it holds"
	case strings.Contains(msg, "expired certificate"), strings.Contains(msg, "certificate expired"):
		return "the server refused the client certificate as expired: renew --tlscert"
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate"), strings.Contains(msg, "certificate required"):
		return "the server refused the client certificate: check --tlscert/--tlskey and that the server's CA signed them"
	case strings.Contains(msg, "closed by remote after tls handshake"), strings.Contains(msg, "connection reset"), strings.Contains(msg, "broken pipe"):
		return "the server closed the connection during TLS setup, as it does with a client certificate it does not accept: check --tlscert/--tlskey and that the server's CA signed them"
	case strings.Contains(msg, "tls"), strings.Contains(msg, "x509"), errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted):
		return "a TLS problem: check --tlsca, --tlscert and --tlskey against the server's TLS settings"
	case errors.Is(err, nats.ErrNoServers):
		return "is a server running? start one with `make run`, or pass --nats"
	}
	return "check --nats and the credentials"
}
