// Package cmd_test runs every command the way an operator does, as a built
// binary, and checks the conventions of internal/cli: exit status 0 for --help
// and --version, 2 for a usage error (said once, on the first line), 1 for a
// runtime error such as an unreachable NATS.
package cmd_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bin is the folder TestMain builds every command into.
var bin string

func TestMain(m *testing.M) {
	// go test caches a result by the files the test opens: stat every Go file
	// the commands are built from, so that a change to any of them runs the
	// table again.
	_ = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") {
			_, _ = os.Stat(path)
		}
		return nil
	})
	dir, err := os.MkdirTemp("", "ratefleet-cli-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./...")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the commands:", err)
		os.Exit(1)
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// unreachable is a NATS URL nothing listens on.
const unreachable = "nats://127.0.0.1:1"

// cliCase is one command line and what it must give: the exit status and the
// start of the first line of stdout (for 0) or stderr (otherwise).
type cliCase struct {
	name  string
	args  []string
	code  int
	first string
}

// commands lists every command line an operator types: the binary, its
// subcommand if any, and the arguments that reach NATS for the unreachable case.
func cliCases() []cliCase {
	type command struct {
		name     string   // as the usage and errors name it
		argv     []string // binary and subcommand
		stray    bool     // whether it takes no positional argument
		runtime  []string // arguments giving a runtime error (an unreachable NATS, mostly)
		runFirst string   // the first line of that error
	}
	connect := "connect to NATS at " + unreachable
	commands := []command{
		{"producer", []string{"producer"}, true, []string{"--nats", unreachable}, connect},
		{"worker", []string{"worker"}, true, []string{"--nats", unreachable, "RATEFLEET_KEYS=k1=not-a-secret"}, connect},
		{"monitor", []string{"monitor"}, true, []string{"--nats", unreachable}, connect},
		{"service", []string{"service"}, true, []string{"--nats", unreachable}, connect},
		{"exchange", []string{"exchange"}, true, []string{"--listen", "127.0.0.1:-1", "--log-level", "warn"}, "listen on 127.0.0.1:-1"},
		{"fleet", []string{"fleet"}, true, []string{"--bin", "/nonexistent", "--log-level", "warn"}, "start exchange (/nonexistent/exchange)"},
		{"streams apply", []string{"streams", "apply"}, true, []string{"--nats", unreachable}, connect},
		{"streams check", []string{"streams", "check"}, true, []string{"--nats", unreachable}, connect},
		{"streams roles", []string{"streams", "roles"}, true, []string{"--streams", "/nonexistent.yaml"}, "read streams configuration"},
		{"streams keys ls", []string{"streams", "keys", "ls"}, true, []string{"--nats", unreachable}, connect},
		{"streams keys clear", []string{"streams", "keys", "clear"}, false, []string{"--nats", unreachable, "--yes", "key1"}, connect},
		{"graveyard ls", []string{"graveyard", "ls"}, true, []string{"--nats", unreachable}, connect},
		{"graveyard show", []string{"graveyard", "show"}, false, []string{"--nats", unreachable, "42"}, connect},
		{"graveyard replay", []string{"graveyard", "replay"}, false, []string{"--nats", unreachable, "42"}, connect},
		{"graveyard rm", []string{"graveyard", "rm"}, false, []string{"--nats", unreachable, "--yes", "42"}, connect},
		{"graveyard purge", []string{"graveyard", "purge"}, true, []string{"--nats", unreachable, "--yes"}, connect},
	}
	var cases []cliCase
	for _, c := range commands {
		prog := c.argv[0]
		with := func(args ...string) []string { return append(append([]string(nil), c.argv...), args...) }
		cases = append(cases,
			cliCase{c.name + " --help", with("--help"), 0, "Usage: " + c.name + " [flags]"},
			cliCase{c.name + " --version", with("--version"), 0, prog + " "},
			cliCase{c.name + " bad flag", with("--bogus"), 2, prog + ": flag provided but not defined: -bogus"},
			cliCase{c.name + " bad log format", with("--log-format", "xml"), 2, prog + `: --log-format "xml": want text or json`},
			cliCase{c.name + " unreachable", with(c.runtime...), 1, prog + ": " + c.runFirst},
		)
		if c.stray {
			cases = append(cases, cliCase{c.name + " stray argument", with("stray"), 2, prog + `: unexpected argument "stray"`})
		}
	}
	return append(cases,
		cliCase{"graveyard show without entry", []string{"graveyard", "show"}, 2, "graveyard: graveyard show needs SEQ|ID..."},
		cliCase{"graveyard replay selecting nothing", []string{"graveyard", "replay", "--nats", unreachable}, 2, "graveyard: graveyard replay acts on nothing by default"},
		cliCase{"graveyard rm selecting nothing", []string{"graveyard", "rm", "--yes"}, 2, "graveyard: graveyard rm acts on nothing by default"},
		cliCase{"graveyard unknown reason", []string{"graveyard", "ls", "--reason", "bogus"}, 2, `graveyard: --reason "bogus": no such reason`},
		cliCase{"graveyard bad --since", []string{"graveyard", "ls", "--since", "yesterday"}, 2, `graveyard: --since "yesterday"`},
		cliCase{"graveyard no command", []string{"graveyard"}, 2, "Usage: graveyard ls|show|replay|rm|purge"},
		cliCase{"streams no command", []string{"streams"}, 2, "Usage: streams apply|check|roles|keys"},
		cliCase{"streams keys clear without key", []string{"streams", "keys", "clear"}, 2, "streams: streams keys clear needs KEY..."},
		cliCase{"fleet cpu bad keys", []string{"fleet", "cpu", "--keys", "5,none"}, 2, `fleet: --keys "5,none": want positive numbers`},
		cliCase{"fleet cpu bad profile cell", []string{"fleet", "cpu", "--profile-cell", "100"}, 2, `fleet: --profile-cell: cell "100": want keys x workers`},
		cliCase{"fleet nats missing users file", []string{"fleet", "nats", "--users-file", "/nonexistent.json"}, 1, "fleet: --users-file: open /nonexistent.json"},
		cliCase{"fleet version is not a subcommand", []string{"fleet", "version"}, 2, `fleet: unexpected argument "version"`},
		cliCase{"worker id with a space", []string{"worker", "--id", "has space"}, 2, `worker: --id "has space": invalid id`},
		cliCase{"worker id from the environment", []string{"worker", "RATEFLEET_WORKER_ID=a..b"}, 2, `worker: --id "a..b": invalid id`},
		cliCase{"a bad value from the environment", []string{"monitor", "RATEFLEET_MONITOR_INTERVAL=soon"}, 2, "monitor: $RATEFLEET_MONITOR_INTERVAL: invalid value"},
	)
}

// TestCommands_ExitCodesAndFirstLines is the table of every command line an
// operator may get wrong or right: --help and --version exit 0 with the usage
// or version first on stdout; a bad flag, a bad log format or a stray argument
// exit 2 and say so once, first on stderr; an unreachable NATS (or another
// runtime failure) exits 1 and says what failed first on stderr. Arguments of
// the form NAME=VALUE set the environment instead.
func TestCommands_ExitCodesAndFirstLines(t *testing.T) {
	cases := cliCases()
	got := make([]int, len(cases)) // each subtest writes only its own
	t.Cleanup(func() {
		var table strings.Builder
		for i, tc := range cases {
			fmt.Fprintf(&table, "| `%s` | %d | %d |\n", strings.Join(tc.args, " "), tc.code, got[i])
		}
		t.Logf("| command line | want | got |\n%s", table.String())
	})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var env, args []string
			for _, a := range tc.args[1:] {
				if strings.HasPrefix(a, "RATEFLEET_") {
					env = append(env, a)
					continue
				}
				args = append(args, a)
			}
			cmd := exec.CommandContext(ctx, filepath.Join(bin, tc.args[0]), args...)
			cmd.Env = append(cleanEnv(), env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			got[i] = code
			if err != nil && code < 0 {
				t.Fatalf("%v: %v", tc.args, err)
			}
			out := stderr.String()
			if tc.code == 0 {
				out = stdout.String()
			}
			first, _, _ := strings.Cut(out, "\n")
			if code != tc.code || !strings.HasPrefix(first, tc.first) {
				t.Errorf("%s: exit %d, first line %q; want exit %d, first line starting %q\nstdout: %s\nstderr: %s",
					strings.Join(tc.args, " "), code, first, tc.code, tc.first, stdout.String(), stderr.String())
			}
			if tc.code == 2 && strings.Count(stderr.String(), strings.TrimPrefix(first, tc.args[0]+": ")) != 1 {
				t.Errorf("the usage error is said more than once:\n%s", stderr.String())
			}
		})
	}
}

// cleanEnv is this process's environment without any variable a command reads,
// so that the table does not depend on the shell it runs in.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RATEFLEET_") || strings.HasPrefix(kv, "NATS_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
