// Command graveyard inspects, replays and removes the requests ratefleet gave up on.
//
//	graveyard ls     [filters] [--count] [--json] [--limit N]
//	graveyard show   SEQ|ID...
//	graveyard replay SEQ|ID... | [filters] | --all   [--dry-run] [--rate N] [--ttl D]
//	graveyard rm     SEQ|ID... | [filters] | --all   [--yes]
//	graveyard purge  [--reason R] [--yes]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/wire"
)

func main() {
	cli.Main("graveyard", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, time.Now)
	})
}

const usage = `Usage: graveyard ls|show|replay|rm|purge [flags]

  ls      [filters] [--count] [--json] [--limit N]   list entries (or count them by reason, key, status)
  show    SEQ|ID...                                  entries with their original request and every attempt
  replay  SEQ|ID... | filters | --all  [--dry-run]    publish fresh requests for the selected entries
  rm      SEQ|ID... | filters | --all  [--yes]        remove the selected entries
  purge   [--reason R] [--yes]                       remove every entry (of one reason) at once

Entries are named by graveyard sequence number or by any id they carry (a
malformed request is found by the id it had). Filters: --reason, --key, --status,
--since and --until (an RFC 3339 time, or an age such as 90s, 1h or 2d), --id.
replay and rm act on nothing unless given entries, a filter or --all; rm and purge
ask for confirmation unless given --yes. Run 'graveyard CMD --help' for the flags.

ls and show only read: the monitor role may run them. replay, rm and purge change
the graveyard: they need the graveyard role (see 'streams roles').
`

// reasons lists the --reason values, for help and errors.
var reasons = strings.Join(wire.Reasons(), ", ")

// stdio bundles what a subcommand reads and writes, and its clock.
type stdio struct {
	in          io.Reader
	out, errOut io.Writer
	now         func() time.Time
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, now func() time.Time) error {
	s := stdio{in: stdin, out: stdout, errOut: stderr, now: now}
	sub := func(name string, run func(context.Context, []string, stdio) error) cli.Sub {
		return cli.Sub{Name: name, Run: func(ctx context.Context, args []string) error { return run(ctx, args, s) }}
	}
	return cli.Dispatch(ctx, "graveyard", usage, args, stdout, stderr, nil,
		sub("ls", ls), sub("show", show), sub("replay", replay), sub("rm", rm), sub("purge", purge))
}

// command is one subcommand's line: the shared flags and, when filters is set,
// the filters.
type command struct {
	*cli.Command
	nats                           cli.NATS
	streamsFile                    string
	reason, key, since, until, ids string
	status                         int
	all                            bool
}

func newCommand(name, what string, s stdio, filters bool) *command {
	c := &command{Command: cli.NewCommand("graveyard "+name, what, s.out, s.errOut)}
	fs := c.Flags
	c.nats.Register(fs)
	fs.StringVar(&c.streamsFile, "streams", "", "streams.yaml to check the server against (default: the built-in one)")
	if filters {
		fs.StringVar(&c.reason, "reason", "", "only entries buried for this `reason`: "+reasons)
		fs.StringVar(&c.key, "key", "", "only entries whose attempts used this key `name`")
		fs.IntVar(&c.status, "status", 0, "only entries whose last attempt got this HTTP status")
		fs.StringVar(&c.since, "since", "", "only entries buried at or after this `time`: RFC 3339, or an age such as 1h or 2d")
		fs.StringVar(&c.until, "until", "", "only entries buried before this `time`: RFC 3339, or an age such as 10m")
		fs.StringVar(&c.ids, "id", "", "only these request ids or graveyard sequence numbers, comma-separated")
	}
	return c
}

// parseTime reads an RFC 3339 time or an age before now: a Go duration (90s,
// 1h30m) or a number of days (2d).
func parseTime(flagName, v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if days, ok := strings.CutSuffix(v, "d"); ok && err != nil {
		n, e := strconv.ParseFloat(days, 64)
		d, err = time.Duration(n*24*float64(time.Hour)), e
	}
	if err != nil || d < 0 {
		return time.Time{}, cli.UsageError{Err: fmt.Errorf("%s %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z or an age such as 90s, 1h or 2d", flagName, v)}
	}
	return now.Add(-d), nil
}

// filter returns the selection the flags and the named entries make. selects
// reports whether anything narrows it (entries, a filter or --all).
func (c *command) filter(names []string, now time.Time) (f graveyard.Filter, selects bool, err error) {
	if c.reason != "" && !slices.Contains(wire.Reasons(), c.reason) {
		return f, false, c.Usage(fmt.Errorf("--reason %q: no such reason; want one of %s", c.reason, reasons))
	}
	f = graveyard.Filter{Reason: c.reason, Key: c.key, Status: c.status}
	for _, p := range []struct {
		flag, v string
		dst     *time.Time
	}{{"--since", c.since, &f.Since}, {"--until", c.until, &f.Until}} {
		if p.v == "" {
			continue
		}
		if *p.dst, err = parseTime(p.flag, p.v, now); err != nil {
			return f, false, err
		}
	}
	if c.ids != "" {
		names = append(names, strings.Split(c.ids, ",")...)
	}
	if len(names) > 0 {
		f.IDs = map[string]bool{}
		for _, id := range names {
			if id = strings.TrimSpace(id); id != "" {
				f.IDs[id] = true
			}
		}
	}
	selects = c.all || len(f.IDs) > 0 || c.reason != "" || c.key != "" || c.status != 0 || !f.Since.IsZero() || !f.Until.IsZero()
	return f, selects, nil
}

func (c *command) open(ctx context.Context, log *slog.Logger) (*natsconn.Conn, *graveyard.Graveyard, error) {
	nc, err := c.nats.Resolve(os.Getenv, log)
	if err != nil {
		return nil, nil, err
	}
	// Only compare with streams.yaml: reading the graveyard must not need (or use)
	// the rights to change the server.
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-graveyard", StreamsFile: c.streamsFile, CheckOnly: true, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	g, err := graveyard.New(conn.JS, conn.Streams.Graveyard.Stream.Name, conn.Streams.Graveyard.Stream.Subjects[0])
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, g, nil
}

// row is an entry as ls --json prints it.
type row struct {
	Seq        uint64    `json:"seq"`
	BuriedAt   time.Time `json:"buried_at"`
	Reason     string    `json:"reason"`
	RequestID  string    `json:"request_id,omitempty"`
	IDs        []string  `json:"ids,omitempty"`
	Key        string    `json:"key,omitempty"`
	Deliveries uint64    `json:"deliveries"`
	LastStatus int       `json:"last_status,omitempty"`
	Error      string    `json:"error,omitempty"`
}

func ls(ctx context.Context, args []string, s stdio) error {
	c := newCommand("ls", "Lists the graveyard's entries, oldest first, or counts them by reason, key and last status.", s, true)
	count := c.Flags.Bool("count", false, "count entries by reason, key and last status instead of listing them")
	asJSON := c.Flags.Bool("json", false, "print one JSON object a line (with --count: one a group)")
	limit := c.Flags.Int("limit", 0, "list at most this many entries; 0 for all")
	if _, err := c.Parse(args, os.Getenv); err != nil {
		return err
	}
	if *limit < 0 {
		return c.Usage(fmt.Errorf("--limit %d must not be negative", *limit))
	}
	f, _, err := c.filter(nil, s.now())
	if err != nil {
		return err
	}
	conn, g, err := c.open(ctx, c.Logger())
	if err != nil {
		return err
	}
	defer conn.Close()
	type group struct {
		Reason     string `json:"reason"`
		Key        string `json:"key"`
		LastStatus int    `json:"last_status"`
		Entries    int    `json:"entries"`
	}
	counts := map[group]int{}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	if !*count && !*asJSON {
		fmt.Fprintln(tw, "SEQ\tBURIED\tREASON\tREQUEST\tKEY\tDELIVERIES\tLAST ERROR")
	}
	total := 0
	err = g.Walk(ctx, f, func(st graveyard.Stored) bool {
		total++
		e := st.Entry
		switch {
		case *count:
			counts[group{Reason: e.Reason, Key: keyOf(e), LastStatus: lastStatus(e)}]++
		case *asJSON:
			_ = writeJSON(s.out, "", row{Seq: st.Seq, BuriedAt: e.BuriedAt, Reason: e.Reason, RequestID: e.RequestID, IDs: e.IDs(),
				Key: keyOf(e), Deliveries: e.Deliveries, LastStatus: lastStatus(e), Error: e.Error})
		default:
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", st.Seq, e.BuriedAt.Format(time.RFC3339), cli.Printable(e.Reason), shownID(firstID(e)), shownID(keyOf(e)), e.Deliveries, oneLine(e.Error, 60))
		}
		return *limit == 0 || total < *limit
	})
	if *count {
		groups := make([]group, 0, len(counts))
		for g, n := range counts {
			g.Entries = n
			groups = append(groups, g)
		}
		sort.Slice(groups, func(i, j int) bool {
			a, b := groups[i], groups[j]
			if a.Reason != b.Reason {
				return a.Reason < b.Reason
			}
			if a.Key != b.Key {
				return a.Key < b.Key
			}
			return a.LastStatus < b.LastStatus
		})
		if !*asJSON {
			fmt.Fprintln(tw, "REASON\tKEY\tLAST STATUS\tENTRIES")
		}
		for _, g := range groups {
			if *asJSON {
				_ = writeJSON(s.out, "", g)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", cli.Printable(g.Reason), shownID(g.Key), g.LastStatus, g.Entries)
		}
	}
	if !*asJSON {
		fmt.Fprintf(tw, "\n%d entries\n", total)
	}
	if ferr := tw.Flush(); err == nil {
		err = ferr
	}
	return err
}

func firstID(e graveyard.Entry) string {
	if ids := e.IDs(); len(ids) > 0 {
		return ids[0]
	}
	return ""
}

func keyOf(e graveyard.Entry) string {
	if len(e.Attempts) > 0 && e.Attempts[len(e.Attempts)-1].Key != "" {
		return e.Attempts[len(e.Attempts)-1].Key
	}
	return e.Key
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shownID returns an id, a key name or a reason as printed in text: Printable
// (anyone who may publish a request chooses its id), "-" when empty.
func shownID(s string) string { return orDash(cli.Printable(s)) }

// writeJSON writes v as one line of JSON, or indented with indent, made
// PrintableJSON.
func writeJSON(w io.Writer, indent string, v any) error {
	var b []byte
	var err error
	if indent == "" {
		b, err = json.Marshal(v)
	} else {
		b, err = json.MarshalIndent(v, "", indent)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(append(cli.PrintableJSON(b), '\n'))
	return err
}

func lastStatus(e graveyard.Entry) int {
	if len(e.Attempts) == 0 {
		return 0
	}
	return e.Attempts[len(e.Attempts)-1].Status
}

// oneLine returns s Printable, on one line, cut to at most n characters.
func oneLine(s string, n int) string {
	s = cli.Printable(strings.ReplaceAll(s, "\n", " "))
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// shown is an entry as show prints it: the original once, as JSON when it is
// JSON and as text when it is not.
type shown struct {
	Seq          uint64              `json:"seq"`
	V            int                 `json:"v"`
	Reason       string              `json:"reason"`
	RequestID    string              `json:"request_id,omitempty"`
	IDs          []string            `json:"ids,omitempty"`
	Original     json.RawMessage     `json:"original,omitempty"`
	OriginalText string              `json:"original_text,omitempty"`
	Stream       string              `json:"stream"`
	StreamSeq    uint64              `json:"stream_seq"`
	Deliveries   uint64              `json:"deliveries"`
	Attempts     []graveyard.Attempt `json:"attempts,omitempty"`
	Error        string              `json:"error,omitempty"`
	Worker       string              `json:"worker,omitempty"`
	Key          string              `json:"key,omitempty"`
	BuriedAt     time.Time           `json:"buried_at"`
}

func show(ctx context.Context, args []string, s stdio) error {
	c := newCommand("show", "Prints the named entries, each with its original request and every attempt, as JSON.", s, false)
	c.Args, c.MinArgs, c.MaxArgs = "SEQ|ID...", 1, -1
	names, err := c.Parse(args, os.Getenv)
	if err != nil {
		return err
	}
	conn, g, err := c.open(ctx, c.Logger())
	if err != nil {
		return err
	}
	defer conn.Close()
	found, err := find(ctx, g, names)
	if err != nil {
		return err
	}
	for _, st := range found {
		e := st.Entry
		out := shown{Seq: st.Seq, V: e.V, Reason: e.Reason, RequestID: e.RequestID, IDs: e.IDs(), Stream: e.Stream, StreamSeq: e.StreamSeq,
			Deliveries: e.Deliveries, Attempts: e.Attempts, Error: e.Error, Worker: e.Worker, Key: e.Key, BuriedAt: e.BuriedAt}
		if json.Valid(e.Original) {
			out.Original = e.Original
		} else {
			out.OriginalText = string(e.Original)
		}
		if err := writeJSON(s.out, "  ", out); err != nil {
			return err
		}
	}
	return nil
}

// find returns the entries the names select, in graveyard order; a name that
// selects nothing is an error naming it.
func find(ctx context.Context, g *graveyard.Graveyard, names []string) ([]graveyard.Stored, error) {
	f := graveyard.Filter{IDs: map[string]bool{}}
	for _, n := range names {
		f.IDs[n] = true
	}
	var found []graveyard.Stored
	seen := map[string]bool{}
	if err := g.Walk(ctx, f, func(st graveyard.Stored) bool {
		found = append(found, st)
		seen[strconv.FormatUint(st.Seq, 10)] = true
		for _, id := range st.Entry.IDs() {
			seen[id] = true
		}
		return true
	}); err != nil {
		return nil, err
	}
	for _, n := range names {
		if !seen[n] {
			return nil, fmt.Errorf("%w %s (list them with `graveyard ls`)", graveyard.ErrNoEntry, cli.Printable(n))
		}
	}
	return found, nil
}

// checkSelection returns a usage error for bad filters, or for nothing named,
// no filter and no --all: replay and rm never act on every entry by default.
func (c *command) checkSelection(names []string, now time.Time) error {
	_, selects, err := c.filter(names, now)
	if err == nil && !selects {
		err = c.Usage(fmt.Errorf("%s acts on nothing by default: name entries (SEQ or ID), give a filter, or pass --all", c.Name))
	}
	return err
}

// selectEntries returns the entries named or matching the filters, at most
// limit (0: all).
func (c *command) selectEntries(ctx context.Context, g *graveyard.Graveyard, names []string, now time.Time, limit int) ([]graveyard.Stored, error) {
	f, _, err := c.filter(names, now)
	if err != nil {
		return nil, err
	}
	var out []graveyard.Stored
	err = g.Walk(ctx, f, func(st graveyard.Stored) bool {
		out = append(out, st)
		return limit == 0 || len(out) < limit
	})
	return out, err
}

// confirm asks on stderr and reads the answer from stdin; only y or yes agrees.
func confirm(s stdio, question string) error { return cli.Confirm(s.in, s.errOut, question) }

func replay(ctx context.Context, args []string, s stdio) error {
	c := newCommand("replay", "Publishes a fresh request for each selected entry (new time to live, replay_of set to the original id), then removes the entry once the requests stream stored it. Rerunning an interrupted replay sends nothing twice.", s, true)
	c.Args, c.MaxArgs = "[SEQ|ID...]", -1
	c.Flags.BoolVar(&c.all, "all", false, "select every entry (when no entry or filter is given); never from the environment")
	c.NoEnv("all")
	dry := c.Flags.Bool("dry-run", false, "show what would be replayed, change nothing")
	rate := c.Flags.Float64("rate", 20, "replayed requests a second at most, so live traffic keeps its share")
	ttl := c.Flags.Duration("ttl", 0, "time to live of the replayed requests (default: the original's)")
	limit := c.Flags.Int("limit", 0, "replay at most this many entries; 0 for all selected")
	names, err := c.Parse(args, os.Getenv)
	if err != nil {
		return err
	}
	if *rate <= 0 || *limit < 0 {
		return c.Usage(fmt.Errorf("--rate %v must be positive and --limit %d not negative", *rate, *limit))
	}
	if err := c.checkSelection(names, s.now()); err != nil {
		return err // before any connection
	}
	log := c.Logger()
	conn, g, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	selected, err := c.selectEntries(ctx, g, names, s.now(), *limit)
	if err != nil {
		return err
	}
	r := graveyard.NewReplayer(g, conn.Streams.Requests.Stream.Subjects[0], *ttl, s.now)
	if r.Ledger, err = graveyard.OpenLedger(ctx, conn.JS, conn.Streams.KV.Replays.Bucket); err != nil {
		return err
	}
	r.DuplicateWindow = conn.Streams.Requests.Stream.DuplicateWindow
	results := settle.NewResults(conn.JS, conn.Streams)
	r.Served = func(ctx context.Context, owner wire.Owner, id string, seq uint64) (bool, error) {
		res, ok, err := results.Of(ctx, owner, id, seq)
		return ok && res.Outcome == wire.Served, err
	}
	gap := time.Duration(float64(time.Second) / *rate)
	n := len(selected)
	done, skipped := 0, 0
	for i, st := range selected {
		req, err := r.Plan(st)
		if err == nil {
			err = r.Check(ctx, st)
		}
		if err != nil {
			fmt.Fprintf(s.out, "%d/%d skip %d: %s\n", i+1, n, st.Seq, cli.Printable(err.Error()))
			skipped++
			continue
		}
		if *dry {
			fmt.Fprintf(s.out, "%d/%d would replay %d (%s, %s) as %s\n", i+1, n, st.Seq, shownID(st.Entry.Reason), shownID(firstID(st.Entry)), shownID(req.ID))
			continue
		}
		if done > 0 {
			t := time.NewTimer(gap)
			select {
			case <-ctx.Done():
				t.Stop()
				fmt.Fprintf(s.out, "interrupted: %d of %d replayed, %d skipped, %d left in the graveyard (rerun to continue; nothing is sent twice)\n", done, n, skipped, n-i)
				return ctx.Err()
			case <-t.C:
			}
		}
		if _, err := r.Replay(ctx, st); err != nil {
			fmt.Fprintf(s.out, "stopped: %d of %d replayed, %d skipped\n", done, n, skipped)
			return err
		}
		done++
		fmt.Fprintf(s.out, "%d/%d replayed %d (%s, %s) as %s\n", i+1, n, st.Seq, shownID(st.Entry.Reason), shownID(firstID(st.Entry)), shownID(req.ID))
	}
	if *dry {
		fmt.Fprintf(s.out, "dry run: %d of %d selected entries would be replayed, %d cannot be (nothing changed)\n", n-skipped, n, skipped)
		return nil
	}
	fmt.Fprintf(s.out, "done: %d of %d replayed, %d skipped (cannot be replayed: see `graveyard show`)\n", done, n, skipped)
	if done > 0 {
		log.Info("graveyard entries replayed", "replayed", done, "skipped", skipped)
	}
	return nil
}

func rm(ctx context.Context, args []string, s stdio) error {
	c := newCommand("rm", "Removes the selected entries from the graveyard for good, after confirmation.", s, true)
	c.Args, c.MaxArgs = "[SEQ|ID...]", -1
	c.Flags.BoolVar(&c.all, "all", false, "select every entry (when no entry or filter is given); never from the environment")
	c.NoEnv("all")
	yes := c.Flags.Bool("yes", false, "do not ask for confirmation")
	names, err := c.Parse(args, os.Getenv)
	if err != nil {
		return err
	}
	if err := c.checkSelection(names, s.now()); err != nil {
		return err
	}
	log := c.Logger()
	conn, g, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	selected, err := c.selectEntries(ctx, g, names, s.now(), 0)
	if err != nil {
		return err
	}
	if len(selected) == 0 {
		fmt.Fprintln(s.out, "no entry selected: nothing removed")
		return nil
	}
	if !*yes {
		if err := confirm(s, fmt.Sprintf("remove %d graveyard entries for good?", len(selected))); err != nil {
			return err
		}
	}
	removed := 0
	for _, st := range selected {
		if err := g.Delete(ctx, st.Seq); err != nil && !errors.Is(err, graveyard.ErrNoEntry) {
			fmt.Fprintf(s.out, "stopped: %d of %d removed\n", removed, len(selected))
			return err
		}
		removed++
	}
	fmt.Fprintf(s.out, "removed %d of %d entries\n", removed, len(selected))
	log.Info("graveyard entries removed", "removed", removed)
	return nil
}

func purge(ctx context.Context, args []string, s stdio) error {
	c := newCommand("purge", "Removes every graveyard entry, or every entry of one --reason, at once, after confirmation.", s, false)
	c.Flags.StringVar(&c.reason, "reason", "", "only entries buried for this `reason`: "+reasons)
	yes := c.Flags.Bool("yes", false, "do not ask for confirmation")
	if _, err := c.Parse(args, os.Getenv); err != nil {
		return err
	}
	if _, _, err := c.filter(nil, s.now()); err != nil {
		return err
	}
	log := c.Logger()
	conn, g, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	what := "every graveyard entry"
	if c.reason != "" {
		what = "every graveyard entry buried for " + c.reason
	}
	if !*yes {
		if err := confirm(s, "remove "+what+" for good?"); err != nil {
			return err
		}
	}
	n, err := g.Purge(ctx, c.reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(s.out, "purged %d entries\n", n)
	log.Info("graveyard purged", "reason", c.reason, "removed", n)
	return nil
}
