package cli_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
)

func TestCommand_FlagThenEnvironmentThenDefault(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		rate  float64
		level string
	}{
		{"default", nil, nil, 20, "INFO"},
		{"environment", nil, map[string]string{"RATEFLEET_GRAVEYARD_RATE": "5", "RATEFLEET_LOG_LEVEL": "debug"}, 5, "DEBUG"},
		{"flag over environment", []string{"--rate", "7"}, map[string]string{"RATEFLEET_GRAVEYARD_RATE": "5"}, 7, "INFO"},
		{"another program's variable is not read", nil, map[string]string{"RATEFLEET_PRODUCER_RATE": "5"}, 20, "INFO"},
		{"a flag kept from the environment", nil, map[string]string{"RATEFLEET_GRAVEYARD_RATE": "5", "RATEFLEET_GRAVEYARD_ALL": "true"}, 5, "INFO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cli.NewCommand("graveyard replay", "Replays.", &bytes.Buffer{}, &bytes.Buffer{})
			rate := c.Flags.Float64("rate", 20, "rate")
			all := c.Flags.Bool("all", false, "every entry")
			c.NoEnv("all")
			_, err := c.Parse(tc.args, func(k string) string { return tc.env[k] })
			require.NoError(t, err)
			require.False(t, *all, "--all must be typed")
			require.Equal(t, tc.rate, *rate)
			require.Equal(t, tc.level, c.LogLevel().String())
		})
	}
}

func TestCommand_ArgumentsAndErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		min, max int
		want     []string
		err      string
	}{
		{"no arguments taken", []string{"x"}, 0, 0, nil, `unexpected argument "x"`},
		{"flags after arguments", []string{"1", "--yes", "2"}, 1, -1, []string{"1", "2"}, ""},
		{"after --", []string{"--", "--yes"}, 0, -1, []string{"--yes"}, ""},
		{"too few", nil, 1, -1, nil, "needs SEQ"},
		{"bad log format", []string{"--log-format", "xml"}, 0, -1, nil, `--log-format "xml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cli.NewCommand("graveyard rm", "Removes.", &bytes.Buffer{}, &bytes.Buffer{})
			c.Flags.Bool("yes", false, "")
			if tc.max != 0 {
				c.Args, c.MinArgs, c.MaxArgs = "SEQ...", tc.min, tc.max
			}
			got, err := c.Parse(tc.args, func(string) string { return "" })
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				var u cli.UsageError
				require.True(t, errors.As(err, &u))
				var msg bytes.Buffer
				require.Equal(t, 2, cli.ExitCode("graveyard", err, &msg))
				require.Equal(t, "graveyard: "+err.Error()+"\nRun 'graveyard rm --help' for the usage.\n", msg.String())
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestCommand_HelpOnStdoutNamesEveryVariableButNoValue(t *testing.T) {
	var stdout, stderr bytes.Buffer
	c := cli.NewCommand("worker", "Works.", &stdout, &stderr)
	var n cli.NATS
	n.Register(c.Flags)
	c.Flags.Duration("max-delay", time.Second, "the delay")
	_, err := c.Parse([]string{"--help"}, func(string) string { return "secret-value" })
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Equal(t, 0, cli.ExitCode("worker", err, &stderr))
	require.Empty(t, stderr.String())
	out := stdout.String()
	require.True(t, strings.HasPrefix(out, "Usage: worker [flags]\n\nWorks.\n"), out)
	for _, v := range []string{"$RATEFLEET_WORKER_MAX_DELAY", "$RATEFLEET_LOG_LEVEL", "$RATEFLEET_LOG_FORMAT", "$RATEFLEET_NATS_CREDS"} {
		require.Contains(t, out, v)
	}
	require.NotContains(t, out, "$RATEFLEET_WORKER_NATS", "the connection flags keep their own variables")
	require.NotContains(t, out, "secret-value")
}

func TestCommand_VersionFromBuildInfo(t *testing.T) {
	var stdout bytes.Buffer
	c := cli.NewCommand("monitor", "Monitors.", &stdout, &bytes.Buffer{})
	_, err := c.Parse([]string{"--version"}, func(string) string { return "" })
	require.ErrorIs(t, err, cli.ErrVersion)
	require.Equal(t, 0, cli.ExitCode("monitor", err, &bytes.Buffer{}))
	require.Regexp(t, `^monitor .*go1\.\d+`, stdout.String())
}

func TestCheckID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"worker-1", true}, {"host.example_2", true}, {"a", true},
		{"", false}, {"has space", false}, {"a.b.>", false}, {"a*", false}, {".a", false}, {"a.", false}, {"a..b", false},
		{"<b>x</b>", false}, {strings.Repeat("x", 129), false},
	} {
		err := cli.CheckID("--id", tc.id)
		require.Equal(t, tc.ok, err == nil, "%q: %v", tc.id, err)
		if err != nil {
			require.ErrorIs(t, err, cli.ErrBadID)
		}
	}
}

// TestNotifyContext_SecondInterruptExitsAtOnce sends this process a SIGINT,
// which cancels the context, a SIGTERM, which changes nothing, then a second
// SIGINT, which calls exit with 130 while the command is still busy.
func TestNotifyContext_SecondInterruptExitsAtOnce(t *testing.T) {
	exited := make(chan int, 1)
	var stderr syncBuffer
	ctx, stop := cli.NotifyContext(context.Background(), &stderr, func(code int) { exited <- code })
	defer stop()
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGINT))
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the first interrupt did not cancel the context")
	}
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	time.Sleep(100 * time.Millisecond) // a repeated SIGTERM, unlike Ctrl-C, must not force an exit
	require.Empty(t, exited)
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGINT))
	select {
	case code := <-exited:
		require.Equal(t, cli.ExitInterrupted, code)
	case <-time.After(5 * time.Second):
		t.Fatal("the second interrupt did not exit")
	}
	require.Contains(t, stderr.String(), "interrupt: stopping cleanly (Ctrl-C again to exit at once)\nsecond interrupt: exiting at once\n")
}

// syncBuffer is a bytes.Buffer safe for the signal goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
