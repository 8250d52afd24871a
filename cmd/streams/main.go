// Command streams is the admin's tool for ratefleet's NATS side: it applies
// streams.yaml (the only command that creates or updates streams, consumers and
// buckets), checks a server against it, prints the NATS permissions of every
// role, and shows and clears the state of the API keys.
//
//	streams apply  [connection flags] [--streams FILE] [--keys-file FILE]
//	streams check  [connection flags] [--streams FILE]
//	streams roles  [--format table|server|nsc] [--role NAME] [--streams FILE]
//	streams keys   ls [--json] | clear KEY... | reset KEY...   [--yes]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/wire"
)

func main() {
	cli.Main("streams", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr) })
}

const usage = `Usage: streams apply|check|roles|keys [flags]

  apply   create what streams.yaml declares and is missing, update what differs
          (never delete); run it as the admin role, before the fleet starts and
          after every change to streams.yaml or to the keys' accounts and labels
          (--keys-file: a consumer for each key, account and label)
  check   compare the server with streams.yaml and change nothing; exits 1 on a
          difference (every other command does this check at start)
  roles   print the NATS permissions of each role: --format table (default),
          server (a nats-server configuration block) or nsc (nsc commands)
  keys    ls: every API key with its holder, 429 count, L, quarantine and next
          free slot; clear KEY / reset KEY: lift a quarantine, reset a 429 count
          (admin role; 'streams keys --help')

Run 'streams CMD --help' for the flags.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	apply := func(name string) cli.Sub {
		return cli.Sub{Name: name, Run: func(ctx context.Context, args []string) error {
			return applyOrCheck(ctx, name, args, stdout, stderr)
		}}
	}
	return cli.Dispatch(ctx, "streams", usage, args, stdout, stderr, nil,
		apply("apply"), apply("check"),
		cli.Sub{Name: "roles", Run: func(_ context.Context, args []string) error { return printRoles(args, stdout, stderr) }},
		cli.Sub{Name: "keys", Run: func(ctx context.Context, args []string) error { return keysCommand(ctx, args, stdin, stdout, stderr) }})
}

func applyOrCheck(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	what := map[string]string{
		"apply": "Creates what streams.yaml declares and is missing, and updates what differs (never deletes). Run it as the admin role.",
		"check": "Compares the server with streams.yaml and changes nothing; exits 1 on a difference.",
	}[cmd]
	c := cli.NewCommand("streams "+cmd, what, stdout, stderr)
	fs := c.Flags
	var nopts cli.NATS
	nopts.Register(fs)
	streamsFile := fs.String("streams", "", "streams.yaml (default: the built-in one)")
	keysFile := fs.String("keys-file", "", "the workers' keys `file`: declare the consumers of requests routed to each of its keys, accounts and labels (only names are read from it; secrets are never shown)")
	if _, err := c.Parse(args, os.Getenv); err != nil {
		return err
	}
	var routes []wire.Route
	if *keysFile != "" {
		ks, err := keys.Load(*keysFile, os.Getenv)
		if err != nil {
			return err
		}
		routes = keys.RoutesOf(ks)
	}
	nc, err := nopts.Resolve(os.Getenv, c.Logger())
	if err != nil {
		return err
	}
	log := c.Logger()
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: nc.URL, Connect: nc.Options, Auth: nc.Auth, Name: "ratefleet-streams",
		StreamsFile: *streamsFile, CheckOnly: cmd == "check", Routes: routes, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	if cmd == "check" {
		fmt.Fprintf(stdout, "%s: the server at %s matches\n", conn.Streams.Source, nc.Redacted())
		return nil
	}
	fmt.Fprintf(stdout, "%s: applied to %s\n", conn.Streams.Source, nc.Redacted())
	return nil
}

func printRoles(args []string, stdout, stderr io.Writer) error {
	c := cli.NewCommand("streams roles", "Prints the NATS permissions of each role.", stdout, stderr)
	fs := c.Flags
	format := fs.String("format", "table", "table, server (a nats-server configuration block) or nsc (nsc add user commands)")
	role := fs.String("role", "", "only this role: "+strings.Join(roles.Names(), ", ")+" (default: all)")
	producers := fs.String("producers", "", "producer user `names`, comma-separated: one user each, with its own requests, results, replies and inbox (default: one user, ratefleet-producer)")
	account := fs.String("account", "RATEFLEET", "the nsc account the users go into, for --format nsc")
	streamsFile := fs.String("streams", "", "streams.yaml whose names the permissions use (default: the built-in one)")
	if _, err := c.Parse(args, os.Getenv); err != nil {
		return err
	}
	cfg, err := natsconn.LoadStreams(*streamsFile)
	if err != nil {
		return err
	}
	var users []string
	if *producers != "" {
		users = strings.Split(*producers, ",")
	}
	rs, err := roles.AllWith(cfg, users)
	if err != nil {
		return cli.Usage(fmt.Errorf("--producers: %w", err))
	}
	if *role != "" {
		if !slices.Contains(roles.Names(), *role) {
			return cli.Usage(fmt.Errorf("--role %q: want one of %s", *role, strings.Join(roles.Names(), ", ")))
		}
		rs = slices.DeleteFunc(rs, func(r roles.Role) bool { return r.Name != *role })
	}
	switch *format {
	case "table":
		return roles.WriteTable(stdout, rs)
	case "server":
		return roles.WriteServerConfig(stdout, rs)
	case "nsc":
		return roles.WriteNSC(stdout, rs, *account)
	}
	return cli.Usage(fmt.Errorf("--format %q: want table, server or nsc", *format))
}
