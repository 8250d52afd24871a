package cli_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
)

func TestDispatch(t *testing.T) {
	var ran []string
	sub := func(name string) cli.Sub {
		return cli.Sub{Name: name, Run: func(_ context.Context, args []string) error {
			ran = append(ran, name+" "+strings.Join(args, " "))
			return nil
		}}
	}
	def := func(_ context.Context, args []string) error {
		ran = append(ran, "default "+strings.Join(args, " "))
		return nil
	}
	tests := []struct {
		name       string
		args       []string
		withDef    bool
		wantErr    error  // errors.Is
		wantUsage  string // a usage error's text
		wantRan    string
		wantStdout string
		wantStderr string
	}{
		{name: "a subcommand gets its arguments", args: []string{"ls", "--x", "1"}, wantRan: "ls --x 1"},
		{name: "help on stdout", args: []string{"--help"}, wantErr: flag.ErrHelp, wantStdout: "USAGE"},
		{name: "version", args: []string{"--version"}, wantErr: cli.ErrVersion, wantStdout: "prog "},
		{name: "nothing: usage on stderr", args: nil, wantUsage: "name a command: ls or rm", wantStderr: "USAGE"},
		{name: "unknown", args: []string{"mv"}, wantUsage: `unknown command "mv": want ls or rm`},
		{name: "with a default: nothing runs it", args: nil, withDef: true, wantRan: "default "},
		{name: "with a default: its flags", args: []string{"--duration", "5s"}, withDef: true, wantRan: "default --duration 5s"},
		{name: "with a default: an unknown word is its to refuse", args: []string{"mv"}, withDef: true, wantRan: "default mv"},
		{name: "with a default: a subcommand still runs", args: []string{"rm", "a"}, withDef: true, wantRan: "rm a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran = nil
			var stdout, stderr bytes.Buffer
			var d func(context.Context, []string) error
			if tt.withDef {
				d = def
			}
			err := cli.Dispatch(context.Background(), "prog sub", "USAGE", tt.args, &stdout, &stderr, d, sub("ls"), sub("rm"))
			switch {
			case tt.wantErr != nil:
				require.ErrorIs(t, err, tt.wantErr)
			case tt.wantUsage != "":
				var u cli.UsageError
				require.True(t, errors.As(err, &u), "%v", err)
				require.Equal(t, tt.wantUsage, u.Error())
				require.Equal(t, "prog sub", u.Command)
			default:
				require.NoError(t, err)
				require.Equal(t, []string{tt.wantRan}, ran)
			}
			require.True(t, strings.HasPrefix(stdout.String(), tt.wantStdout), stdout.String())
			require.True(t, strings.HasPrefix(stderr.String(), tt.wantStderr), stderr.String())
		})
	}
}

func TestConfirm_OnlyYesAgrees(t *testing.T) {
	for answer, want := range map[string]error{"y\n": nil, "YES\n": nil, " yes \n": nil, "n\n": cli.ErrNotConfirmed, "\n": cli.ErrNotConfirmed, "": cli.ErrNotConfirmed, "yeah\n": cli.ErrNotConfirmed} {
		var asked bytes.Buffer
		err := cli.Confirm(strings.NewReader(answer), &asked, "remove 3 entries?")
		require.ErrorIs(t, err, want, "answer %q", answer)
		if want == nil {
			require.NoError(t, err)
		}
		require.Equal(t, "remove 3 entries? [y/N] ", asked.String())
	}
}
