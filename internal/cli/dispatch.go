package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Sub is one subcommand of a program that has several (graveyard, streams,
// fleet): its name and what runs it with the arguments after the name.
type Sub struct {
	Name string
	Run  func(ctx context.Context, args []string) error
}

// Dispatch runs the subcommand of prog (such as "graveyard" or "streams keys")
// that args[0] names, the same way for every such program: -h, --help or help
// prints usage on stdout (flag.ErrHelp); --version prints the version
// (ErrVersion); no argument prints usage on stderr and, like an unknown name,
// is a usage error that lists the subcommands. When def is not nil, it runs
// instead for anything that names no subcommand: the program's own command,
// with its own flags, help and errors.
func Dispatch(ctx context.Context, prog, usage string, args []string, stdout, stderr io.Writer, def func(context.Context, []string) error, subs ...Sub) error {
	if def != nil && (len(args) == 0 || strings.HasPrefix(args[0], "-")) {
		return def(ctx, args) // its flags, --help and --version included
	}
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.Name
	}
	want := strings.Join(names, ", ")
	if n := len(names); n > 1 {
		want = strings.Join(names[:n-1], ", ") + " or " + names[n-1]
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return UsageError{Err: errors.New("name a command: " + want), Command: prog}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	case "-version", "--version":
		fmt.Fprintln(stdout, strings.Fields(prog)[0], Version())
		return ErrVersion
	}
	for _, s := range subs {
		if s.Name == args[0] {
			return s.Run(ctx, args[1:])
		}
	}
	if def != nil {
		return def(ctx, args) // its own parse says what is wrong with the word
	}
	return UsageError{Err: fmt.Errorf("unknown command %q: want %s", args[0], want), Command: prog}
}

// ErrNotConfirmed is returned by Confirm when the answer is not yes.
var ErrNotConfirmed = errors.New("not confirmed: nothing changed (answer y, or pass --yes)")

// Confirm asks question on w and reads the answer from r: only y or yes (in any
// case) agrees; anything else, or no answer, is ErrNotConfirmed.
func Confirm(r io.Reader, w io.Writer, question string) error {
	fmt.Fprintf(w, "%s [y/N] ", question)
	line, _ := bufio.NewReader(r).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return ErrNotConfirmed
}
