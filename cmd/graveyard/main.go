// Command graveyard inspects and replays the requests ratefleet gave up on.
//
//	graveyard ls     [filters] [--count]      list entries, or count them by reason, key and status
//	graveyard show   SEQ|REQUEST-ID           one entry with every attempt
//	graveyard replay [filters] [--dry-run] [--rate N] [--ttl D]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/natsconn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.ExitCode("graveyard", err, os.Stderr))
}

const usage = `Usage: graveyard ls|show|replay [flags]

  ls      [filters] [--count]                 list entries (or count them by reason, key, status)
  show    SEQ|REQUEST-ID                      one entry with its original request and every attempt
  replay  [filters] [--dry-run] [--rate N]    publish fresh requests for the selected entries

Filters: --reason, --key, --status, --since, --until (RFC 3339), --id (request ids or
graveyard sequence numbers, comma-separated). Run 'graveyard CMD --help' for all flags.

ls and show only read: the monitor role may run them. replay publishes requests and
removes entries: it needs the graveyard role (see 'streams roles').
`

type common struct {
	nats                           cli.NATS
	streamsFile                    string
	reason, key, since, until, ids string
	status                         int
}

func (c *common) register(fs *flag.FlagSet, filters bool) {
	c.nats.Register(fs)
	fs.StringVar(&c.streamsFile, "streams", "", "streams.yaml to check the server against (default: the built-in one)")
	if filters {
		fs.StringVar(&c.reason, "reason", "", "only entries buried for this reason (max_deliveries, expired, malformed, key_unusable)")
		fs.StringVar(&c.key, "key", "", "only entries whose attempts used this key name")
		fs.IntVar(&c.status, "status", 0, "only entries whose last attempt got this HTTP status")
		fs.StringVar(&c.since, "since", "", "only entries buried at or after this RFC 3339 time")
		fs.StringVar(&c.until, "until", "", "only entries buried before this RFC 3339 time")
		fs.StringVar(&c.ids, "id", "", "only these request ids or graveyard sequence numbers, comma-separated")
	}
}

func (c *common) filter() (graveyard.Filter, error) {
	f := graveyard.Filter{Reason: c.reason, Key: c.key, Status: c.status}
	for _, p := range []struct {
		s   string
		dst *time.Time
	}{{c.since, &f.Since}, {c.until, &f.Until}} {
		if p.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, p.s)
		if err != nil {
			return f, fmt.Errorf("--since/--until %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", p.s)
		}
		*p.dst = t
	}
	if c.ids != "" {
		f.IDs = map[string]bool{}
		for _, id := range strings.Split(c.ids, ",") {
			f.IDs[strings.TrimSpace(id)] = true
		}
	}
	return f, nil
}

func (c *common) open(ctx context.Context, log *slog.Logger) (*natsconn.Conn, *graveyard.Graveyard, error) {
	nc, err := c.nats.Resolve(os.Getenv)
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

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return cli.Usage(errors.New("name a command: ls, show or replay"))
		}
		return flag.ErrHelp
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	switch args[0] {
	case "ls":
		return ls(ctx, args[1:], stdout, stderr, log)
	case "show":
		return show(ctx, args[1:], stdout, stderr, log)
	case "replay":
		return replay(ctx, args[1:], stdout, stderr, log)
	}
	fmt.Fprint(stderr, usage)
	return cli.Usage(fmt.Errorf("unknown command %q: want ls, show or replay", args[0]))
}

func ls(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("graveyard ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, true)
	count := fs.Bool("count", false, "count entries by reason, key and last status instead of listing them")
	if err := fs.Parse(args); err != nil {
		return cli.Usage(err)
	}
	f, err := c.filter()
	if err != nil {
		return err
	}
	conn, g, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	counts := map[string]int{}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if !*count {
		fmt.Fprintln(tw, "SEQ\tBURIED\tREASON\tREQUEST\tKEY\tDELIVERIES\tLAST ERROR")
	}
	total := 0
	err = g.Walk(ctx, f, func(s graveyard.Stored) bool {
		total++
		e := s.Entry
		if *count {
			counts[fmt.Sprintf("%s\t%s\t%d", e.Reason, keyOf(e), lastStatus(e))]++
			return true
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Seq, e.BuriedAt.Format(time.RFC3339), e.Reason, e.RequestID, keyOf(e), e.Deliveries, oneLine(e.Error, 60))
		return true
	})
	if *count {
		fmt.Fprintln(tw, "REASON\tKEY\tLAST STATUS\tENTRIES")
		var rows []string
		for k := range counts {
			rows = append(rows, k)
		}
		sort.Strings(rows)
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\n", r, counts[r])
		}
	}
	fmt.Fprintf(tw, "\n%d entries\n", total)
	_ = tw.Flush()
	return err
}

func keyOf(e graveyard.Entry) string {
	if len(e.Attempts) > 0 && e.Attempts[len(e.Attempts)-1].Key != "" {
		return e.Attempts[len(e.Attempts)-1].Key
	}
	if e.Key != "" {
		return e.Key
	}
	return "-"
}

func lastStatus(e graveyard.Entry) int {
	if len(e.Attempts) == 0 {
		return 0
	}
	return e.Attempts[len(e.Attempts)-1].Status
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

func show(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("graveyard show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, false)
	// Flags may come before or after the entry's name.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return cli.Usage(err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 1 {
		return cli.Usage(errors.New("show takes one graveyard sequence number or request id"))
	}
	conn, g, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	var found *graveyard.Stored
	name := pos[0]
	if seq, err := strconv.ParseUint(name, 10, 64); err == nil {
		s, err := g.Get(ctx, seq)
		if err != nil {
			return err
		}
		found = &s
	} else {
		err := g.Walk(ctx, graveyard.Filter{IDs: map[string]bool{name: true}}, func(s graveyard.Stored) bool { found = &s; return false })
		if err != nil {
			return err
		}
	}
	if found == nil {
		return fmt.Errorf("no graveyard entry %s (try `graveyard ls`)", name)
	}
	out := struct {
		Seq      uint64          `json:"seq"`
		Entry    graveyard.Entry `json:"entry"`
		Original json.RawMessage `json:"original_request,omitempty"`
	}{Seq: found.Seq, Entry: found.Entry}
	if json.Valid(found.Entry.Original) {
		out.Original = found.Entry.Original
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func replay(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("graveyard replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, true)
	dry := fs.Bool("dry-run", false, "show what would be replayed, change nothing")
	rate := fs.Float64("rate", 20, "replayed requests a second at most, so live traffic keeps its share")
	ttl := fs.Duration("ttl", 0, "time to live of the replayed requests (default: the original's)")
	limit := fs.Int("limit", 0, "replay at most this many entries; 0 for all selected")
	if err := fs.Parse(args); err != nil {
		return cli.Usage(err)
	}
	if *rate <= 0 {
		return fmt.Errorf("--rate %v must be positive", *rate)
	}
	f, err := c.filter()
	if err != nil {
		return err
	}
	conn, g, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := graveyard.NewReplayer(g, conn.Streams.Requests.Stream.Subjects[0], *ttl, nil)
	if r.Ledger, err = graveyard.OpenLedger(ctx, conn.JS, conn.Streams.KV.Replays.Bucket); err != nil {
		return err
	}
	r.DuplicateWindow = conn.Streams.Requests.Stream.DuplicateWindow
	var selected []graveyard.Stored
	if err := g.Walk(ctx, f, func(s graveyard.Stored) bool {
		selected = append(selected, s)
		return *limit == 0 || len(selected) < *limit
	}); err != nil {
		return err
	}
	gap := time.Duration(float64(time.Second) / *rate)
	done, skipped := 0, 0
	for i, s := range selected {
		req, err := r.Plan(s)
		if err != nil {
			fmt.Fprintf(stdout, "skip   %d: %v\n", s.Seq, err)
			skipped++
			continue
		}
		if *dry {
			fmt.Fprintf(stdout, "would replay %d (%s, %s) as %s\n", s.Seq, s.Entry.Reason, s.Entry.RequestID, req.ID)
			continue
		}
		if i > 0 {
			t := time.NewTimer(gap)
			select {
			case <-ctx.Done():
				t.Stop()
				fmt.Fprintf(stdout, "interrupted: %d replayed, %d left in the graveyard (rerun to continue; nothing is sent twice)\n", done, len(selected)-i)
				return ctx.Err()
			case <-t.C:
			}
		}
		if _, err := r.Replay(ctx, s); err != nil {
			return fmt.Errorf("%w; %d replayed before it", err, done)
		}
		done++
		fmt.Fprintf(stdout, "replayed %d (%s, %s) as %s\n", s.Seq, s.Entry.Reason, s.Entry.RequestID, req.ID)
	}
	if *dry {
		fmt.Fprintf(stdout, "dry run: %d entries would be replayed, %d cannot be (nothing changed)\n", len(selected)-skipped, skipped)
		return nil
	}
	fmt.Fprintf(stdout, "%d replayed, %d skipped\n", done, skipped)
	return nil
}
