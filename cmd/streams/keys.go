package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/stats"
)

const keysUsage = `Usage: streams keys ls|clear|reset [flags]

  ls      every API key the fleet knows of: holder, 429 count over its life, L,
          quarantine or unusable mark and why, and the next free send slot
  clear   KEY...   lift a key's quarantine or unusable mark: workers claim it again
                   within 30 s; its 429 count stays (the ban guard trips on the next 429)
  reset   KEY...   set a key's lifetime 429 count to 0, giving the ban guard its whole
                   budget back: only once the upstream's own count for the key is reset

clear and reset change key state: they need the admin role, ask for confirmation
unless given --yes, and log what they changed. ls only reads (the monitor role may
run it). Run 'streams keys CMD --help' for the flags.
`

// writeTimeout bounds one write to key state, listTimeout the reads of ls.
const (
	writeTimeout = 5 * time.Second
	listTimeout  = 10 * time.Second
)

// keyRow is one key as ls shows it.
type keyRow struct {
	Name        string    `json:"name"`
	State       string    `json:"state"` // held, free, quarantined, unusable
	Holder      string    `json:"holder,omitempty"`
	HeldSince   time.Time `json:"held_since,omitzero"`
	Count429    int       `json:"count_429_lifetime"`
	MaxDelayMs  float64   `json:"max_delay_ms"` // L: the limiter's, else the bound key state keeps
	NextFree    time.Time `json:"next_free,omitzero"`
	NextFreeMs  *int64    `json:"next_free_in_ms,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	NonceMark   int64     `json:"nonce_mark"`
	Updated     time.Time `json:"updated,omitzero"`
	Quarantined bool      `json:"quarantined"`
	Unusable    bool      `json:"unusable"`
}

func keysCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	change := func(name string) cli.Sub {
		return cli.Sub{Name: name, Run: func(ctx context.Context, args []string) error {
			return keysChange(ctx, name, args, stdin, stdout, stderr)
		}}
	}
	return cli.Dispatch(ctx, "streams keys", keysUsage, args, stdout, stderr, nil,
		cli.Sub{Name: "ls", Run: func(ctx context.Context, args []string) error { return keysList(ctx, args, stdout, stderr) }},
		change("clear"), change("reset"))
}

// keysConn is a key command's connection: its flags, then NATS.
type keysConn struct {
	*cli.Command
	nats        cli.NATS
	streamsFile string
}

func newKeysCommand(name, what string, stdout, stderr io.Writer) *keysConn {
	c := &keysConn{Command: cli.NewCommand("streams keys "+name, what, stdout, stderr)}
	c.nats.Register(c.Flags)
	c.Flags.StringVar(&c.streamsFile, "streams", "", "streams.yaml to check the server against (default: the built-in one)")
	return c
}

func (c *keysConn) open(ctx context.Context) (*natsconn.Conn, error) {
	nc, err := c.nats.Resolve(os.Getenv, c.Logger())
	if err != nil {
		return nil, err
	}
	return natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-streams-keys",
		StreamsFile: c.streamsFile, CheckOnly: true, Logger: c.Logger()})
}

func keysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newKeysCommand("ls", "Lists every API key the fleet knows of (from key state, leases and the workers' last reports) with its holder, lifetime 429 count, L, quarantine and next free send slot.", stdout, stderr)
	asJSON := c.Flags.Bool("json", false, "print one JSON object a key")
	if _, err := c.Parse(args, os.Getenv); err != nil {
		return err
	}
	conn, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// A read the user's permissions lack gets no answer: bound the wait.
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	rows, err := listKeys(lctx, conn, time.Now())
	if err != nil {
		return fmt.Errorf("%w (listing keys needs the monitor or admin role: see `streams roles`)", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATE\tHOLDER\t429 LIFE\tL MS\tNEXT FREE IN\tREASON")
	for _, r := range rows {
		free := "-"
		if r.NextFreeMs != nil {
			free = fmt.Sprintf("%dms", *r.NextFreeMs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%s\t%s\n", cli.Printable(r.Name), cli.Printable(r.State), dash(cli.Printable(r.Holder)), r.Count429, r.MaxDelayMs, free, dash(cli.Printable(r.Reason)))
	}
	fmt.Fprintf(tw, "\n%d keys\n", len(rows))
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// listKeys joins key state, the lease bucket and the workers' last reports.
func listKeys(ctx context.Context, conn *natsconn.Conn, now time.Time) ([]keyRow, error) {
	store, err := keystate.Open(ctx, conn.JS, conn.Streams.KV.KeyState.Bucket)
	if err != nil {
		return nil, err
	}
	listed, err := store.List(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := conn.JS.KeyValue(ctx, conn.Streams.KV.Leases.Bucket)
	if err != nil {
		return nil, fmt.Errorf("open the lease bucket: %w", err)
	}
	reports, err := stats.LastReports(ctx, conn.JS, conn.Streams.Stats.Stream.Name)
	if err != nil {
		return nil, err
	}
	rows := map[string]*keyRow{}
	row := func(name string) *keyRow {
		if r, ok := rows[name]; ok {
			return r
		}
		r := &keyRow{Name: name}
		rows[name] = r
		return r
	}
	for _, l := range listed {
		r := row(l.Name)
		r.Count429, r.MaxDelayMs, r.NonceMark, r.Updated = l.Record.Count429, float64(l.Record.MaxDelay)/float64(time.Millisecond), l.Record.NonceReserved, l.Record.Updated
		r.Unusable, r.Quarantined, r.Reason = l.Record.Unusable, l.Record.Quarantined, l.Record.Reason
		if l.Err != nil {
			r.Unusable, r.Reason = true, l.Err.Error()
		}
	}
	names, err := leaseKeyNames(ctx, leases)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		row(n)
	}
	for _, rep := range reports {
		for _, kr := range rep.Keys {
			r := row(kr.Name)
			if kr.Held && !rep.Stopped {
				r.MaxDelayMs = max(r.MaxDelayMs, kr.MaxDelayMs)
				if !kr.NextFree.IsZero() {
					r.NextFree = kr.NextFree
				}
			}
		}
	}
	out := make([]keyRow, 0, len(rows))
	for _, r := range rows {
		rec, held, err := lease.Holder(ctx, leases, r.Name)
		if err != nil {
			return nil, err
		}
		switch {
		case r.Quarantined:
			r.State = "quarantined"
		case r.Unusable:
			r.State = "unusable"
		case held:
			r.State, r.Holder, r.HeldSince = "held", rec.Holder, rec.Since
		default:
			r.State = "free"
		}
		if held {
			r.Holder, r.HeldSince = rec.Holder, rec.Since
		}
		if r.State == "held" && !r.NextFree.IsZero() {
			ms := max(r.NextFree.Sub(now).Milliseconds(), 0)
			r.NextFreeMs = &ms
		} else {
			r.NextFree = time.Time{}
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// leaseKeyNames lists the API keys that have an entry in the lease bucket.
func leaseKeyNames(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var names []string
	for entry := range lister.Keys() {
		if name, worker, ok := lease.ParseEntry(entry); ok && !worker {
			names = append(names, name)
		}
	}
	return names, nil
}

func keysChange(ctx context.Context, cmd string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	what := map[string]string{
		"clear": "Lifts the quarantine or unusable mark of each named key, so workers claim it again within 30 s. Its lifetime 429 count stays.",
		"reset": "Sets the lifetime 429 count of each named key to 0, giving the ban guard its whole budget back. Do it only once the upstream's own count for the key is reset.",
	}[cmd]
	c := newKeysCommand(cmd, what, stdout, stderr)
	c.Args, c.MinArgs, c.MaxArgs = "KEY...", 1, -1
	yes := c.Flags.Bool("yes", false, "do not ask for confirmation")
	names, err := c.Parse(args, os.Getenv)
	if err != nil {
		return err
	}
	log := c.Logger()
	conn, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	store, err := keystate.Open(ctx, conn.JS, conn.Streams.KV.KeyState.Bucket)
	if err != nil {
		return err
	}
	listed, err := store.List(ctx)
	if err != nil {
		return err
	}
	known := map[string]keystate.Listed{}
	for _, l := range listed {
		known[l.Name] = l
	}
	for _, n := range names {
		if _, ok := known[n]; !ok {
			return fmt.Errorf("no key state for key %q: nothing to %s (see `streams keys ls`)", n, cmd)
		}
	}
	if !*yes {
		if err := cli.Confirm(stdin, stderr, fmt.Sprintf("%s %d key(s): %v?", cmd, len(names), names)); err != nil {
			return err
		}
	}
	change := store.Clear
	if cmd == "reset" {
		change = store.ResetCount
	}
	for _, n := range names {
		before := known[n].Record
		// A write the user's permissions lack gets no answer: bound the wait.
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		after, err := change(wctx, n, time.Now())
		cancel()
		if err != nil {
			return fmt.Errorf("%s key %s: %w (changing key state needs the admin role: see `streams roles`)", cmd, n, err)
		}
		if cmd == "clear" {
			log.Info("key cleared: workers may claim it again", "key", n, "was_unusable", before.Unusable, "was_quarantined", before.Quarantined,
				"reason_was", before.Reason, "count_429_lifetime", after.Count429)
		} else {
			log.Info("key 429 count reset", "key", n, "count_429_lifetime_was", before.Count429, "quarantined", after.Quarantined)
		}
		fmt.Fprintf(stdout, "%s: %s done\n", n, cmd)
	}
	return nil
}
