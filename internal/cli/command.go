package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
)

// ErrVersion is returned by Command.Parse after it printed the version for
// --version: the command has nothing more to do and exits 0.
var ErrVersion = errors.New("version printed")

// Command is one command line of a ratefleet command ("worker", "graveyard ls"),
// with the conventions every command keeps:
//
//   - --help prints the usage and every flag on stdout, and the command exits 0;
//   - a flag error or a stray argument is a UsageError (exit status 2), reported
//     once, with a hint to run --help;
//   - --version prints the build's version (from the binary's build information);
//   - --log-level and --log-format text|json choose how it logs (see Logger);
//   - every flag may also come from the environment: $RATEFLEET_LOG_LEVEL,
//     $RATEFLEET_LOG_FORMAT and $RATEFLEET_STREAMS for the flags every command has,
//     $RATEFLEET_<PROGRAM>_<FLAG> for the others (RATEFLEET_WORKER_MAX_DELAY for
//     worker --max-delay), and the connection flags from their own variables (see
//     NATS.Resolve). A flag on the command line wins over its variable.
type Command struct {
	// Name is the command as typed, such as "graveyard ls".
	Name string
	// Flags is the command's flag set; register its flags before Parse.
	Flags *flag.FlagSet
	// Args names the positional arguments in the usage line, such as "SEQ|ID...";
	// empty when the command takes none, and then any is refused.
	Args string
	// MinArgs and MaxArgs bound the number of positional arguments (MaxArgs < 0:
	// no bound). Both are 0 unless set.
	MinArgs, MaxArgs int

	usage          string
	noEnv          map[string]bool
	stdout, stderr io.Writer
	level          slog.Level
	format         string
	version        bool
}

// NewCommand returns a command line named name (the program, then any
// subcommand). usage is the text --help prints before the flags: what the command
// does, in a sentence or a paragraph. The command's output goes to stdout, its
// logs and errors to stderr.
func NewCommand(name, usage string, stdout, stderr io.Writer) *Command {
	c := &Command{Name: name, Flags: flag.NewFlagSet(name, flag.ContinueOnError), usage: usage, stdout: stdout, stderr: stderr}
	c.Flags.SetOutput(io.Discard) // Parse reports errors once, through ExitCode
	c.Flags.Usage = func() {}
	c.Flags.TextVar(&c.level, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	c.Flags.StringVar(&c.format, "log-format", "text", "log `format`: text (key=value) or json (one object a line)")
	c.Flags.BoolVar(&c.version, "version", false, "print the version and exit")
	return c
}

// sharedFlags are the flags whose variable carries no program name: every
// command has them and they mean the same everywhere.
var sharedFlags = []string{"log-level", "log-format", "streams"}

// EnvName returns the environment variable that sets the flag name of the
// program prog when the command line does not: RATEFLEET_LOG_LEVEL for
// --log-level, RATEFLEET_WORKER_MAX_DELAY for worker --max-delay.
func EnvName(prog, name string) string {
	up := func(s string) string { return strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(s)) }
	if slices.Contains(sharedFlags, name) {
		return "RATEFLEET_" + up(name)
	}
	return "RATEFLEET_" + up(prog) + "_" + up(name)
}

// NoEnv keeps the named flags from being set by the environment: a flag that
// widens what a destructive command acts on (graveyard rm --all) must be typed.
func (c *Command) NoEnv(names ...string) {
	if c.noEnv == nil {
		c.noEnv = map[string]bool{}
	}
	for _, n := range names {
		c.noEnv[n] = true
	}
}

// program is the first word of the command's name: its binary.
func (c *Command) program() string { return strings.Fields(c.Name + " x")[0] }

// envName returns the variable of flag name, or "" for the connection flags,
// which NATS.Resolve reads from their own variables.
func (c *Command) envName(name string) string {
	if name == "version" || c.noEnv[name] || isConnectionFlag(name) {
		return ""
	}
	return EnvName(c.program(), name)
}

func isConnectionFlag(name string) bool {
	if name == "s" || name == "server" {
		return true
	}
	for _, s := range settings() {
		if s.flag == name {
			return true
		}
	}
	return false
}

// Parse reads args, then the environment (getenv, normally os.Getenv) for every
// flag the command line left unset, and returns the positional arguments. Flags
// may come before or after them. It returns flag.ErrHelp after printing the
// usage for --help, ErrVersion after printing the version for --version, and a
// UsageError for a bad flag, a bad variable or a wrong number of arguments.
func (c *Command) Parse(args []string, getenv func(string) string) ([]string, error) {
	var pos []string
	for rest := args; ; {
		if err := c.Flags.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.PrintUsage(c.stdout)
				return nil, err
			}
			return nil, UsageError{Err: err, Command: c.Name}
		}
		if c.Flags.NArg() == 0 {
			break
		}
		if i := len(rest) - c.Flags.NArg() - 1; i >= 0 && rest[i] == "--" {
			pos = append(pos, c.Flags.Args()...) // after --, everything is an argument
			break
		}
		pos = append(pos, c.Flags.Arg(0))
		rest = c.Flags.Args()[1:]
	}
	if c.version {
		fmt.Fprintln(c.stdout, c.program(), Version())
		return nil, ErrVersion
	}
	set := map[string]bool{}
	c.Flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	c.Flags.VisitAll(func(f *flag.Flag) {
		env := c.envName(f.Name)
		if err != nil || set[f.Name] || env == "" {
			return
		}
		if v := getenv(env); v != "" {
			if e := c.Flags.Set(f.Name, v); e != nil {
				err = UsageError{Err: fmt.Errorf("$%s: invalid value for --%s: %w", env, f.Name, e), Command: c.Name}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if c.format != "text" && c.format != "json" {
		return nil, UsageError{Err: fmt.Errorf("--log-format %q: want text or json", c.format), Command: c.Name}
	}
	switch {
	case c.Args == "" && len(pos) > 0:
		return nil, UsageError{Err: fmt.Errorf("unexpected argument %q: %s takes no arguments, every setting is a flag", pos[0], c.Name), Command: c.Name}
	case len(pos) < c.MinArgs:
		return nil, UsageError{Err: fmt.Errorf("%s needs %s", c.Name, c.Args), Command: c.Name}
	case c.MaxArgs >= 0 && len(pos) > c.MaxArgs:
		return nil, UsageError{Err: fmt.Errorf("unexpected argument %q: %s takes %s", pos[c.MaxArgs], c.Name, c.Args), Command: c.Name}
	}
	return pos, nil
}

// Usage returns err as a UsageError whose hint names this command.
func (c *Command) Usage(err error) error { return UsageError{Err: err, Command: c.Name} }

// PrintUsage writes the usage line, the command's text and every flag with the
// variable that may set it. No default shows a value from the environment.
func (c *Command) PrintUsage(w io.Writer) {
	line := "Usage: " + c.Name + " [flags]"
	if c.Args != "" {
		line += " " + c.Args
	}
	fmt.Fprintf(w, "%s\n\n%s\n\nFlags:\n", line, strings.TrimSpace(c.usage))
	c.Flags.VisitAll(func(f *flag.Flag) {
		if env := c.envName(f.Name); env != "" && !strings.Contains(f.Usage, "$"+env) {
			f.Usage += " ($" + env + ")"
		}
	})
	c.Flags.SetOutput(w)
	c.Flags.PrintDefaults()
	c.Flags.SetOutput(io.Discard)
}

// Logger returns the logger --log-level and --log-format ask for, writing to
// the command's stderr.
func (c *Command) Logger() *slog.Logger { return NewLogger(c.stderr, c.format, c.level) }

// LogLevel returns the level --log-level set.
func (c *Command) LogLevel() slog.Level { return c.level }

// NewLogger returns a logger writing to w in format ("json", else text) from level on.
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
