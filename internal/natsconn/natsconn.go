// Package natsconn connects a ratefleet command to NATS and makes sure the streams,
// consumer and buckets of streams.yaml exist, so a fresh server needs no manual step.
package natsconn

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet"
	"github.com/ratefleet/ratefleet/internal/streams"
)

// DefaultURL is where commands look for NATS unless told otherwise.
const DefaultURL = "nats://127.0.0.1:4222"

// Options says where to connect and which declarations to apply.
type Options struct {
	// URL lists the servers, comma-separated.
	URL string
	// Name identifies the client in the server's connection list.
	Name string
	// StreamsFile is the streams.yaml to apply; the shipped one when empty.
	StreamsFile string
	// CheckOnly verifies the declarations instead of applying them: nothing is
	// created or updated, and a difference is an error.
	CheckOnly bool
	// Logger receives connection events; slog.Default() when nil.
	Logger *slog.Logger
}

// Conn is a connection with JetStream and the applied configuration.
type Conn struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Streams *streams.Config
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
	url := o.URL
	if url == "" {
		url = DefaultURL
	}
	nc, err := nats.Connect(url,
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (is a server running? start one with `make run`, or pass --nats)", url, err)
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
	res, err := apply(ctx, js)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("apply %s: %w", cfg.Source, err)
	}
	for _, ch := range res {
		if ch.Action != streams.Unchanged {
			log.Info("applied stream declaration", "kind", ch.Kind, "name", ch.Name, "action", string(ch.Action))
		}
	}
	return &Conn{NC: nc, JS: js, Streams: cfg}, nil
}

// Close drains the connection, letting pending acks and publishes go out.
func (c *Conn) Close() {
	if err := c.NC.Drain(); err != nil {
		c.NC.Close()
	}
}
