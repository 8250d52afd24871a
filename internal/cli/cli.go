// Package cli holds the conventions every ratefleet command shares: how it parses
// its command line (Command: --help, --version, --log-level, --log-format, every
// flag from the environment, stray arguments refused), how it connects to NATS
// (the nats CLI's flags, environment variables and saved contexts), how secrets
// are kept out of argv and output, how it stops (Main: a first interrupt stops
// cleanly, a second exits at once), and how an error becomes an exit status: 0
// for success (and --help), 1 for a runtime error, 2 for a usage error.
//
// A setting is taken from the first of: its flag, its RATEFLEET_NATS_* variable, its
// NATS_* variable (the nats CLI's), the --context named by one of those. Every secret
// has a form that keeps it off the command line: a file (--creds, --nkey,
// --password-file, --token-file, --tlskey) or an environment variable.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// DefaultURL is where commands look for NATS when no URL is given anywhere.
const DefaultURL = "nats://127.0.0.1:4222"

// UsageError is a command-line mistake: the command exits with status 2.
// Command, when set, names the (sub)command whose --help the hint points to.
type UsageError struct {
	Err     error
	Command string
}

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usage wraps err, typically from flag.FlagSet.Parse, as a UsageError; flag.ErrHelp
// and nil pass through unchanged.
func Usage(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return UsageError{Err: err}
}

// ExitCode returns the exit status for err: 0 for success, --help and
// --version, 2 for a usage error, 1 for any other error. It prints err once on
// stderr prefixed with the command's name, each of its lines made Printable
// (an error may quote what came from NATS or a user), and for a usage error a
// second line saying where the usage is.
func ExitCode(name string, err error, stderr io.Writer) int {
	var usage UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp), errors.Is(err, ErrVersion):
		return 0
	case errors.As(err, &usage):
		help := name
		if usage.Command != "" {
			help = usage.Command
		}
		fmt.Fprintf(stderr, "%s: %s\nRun '%s --help' for the usage.\n", name, printableLines(err.Error()), help)
		return 2
	}
	fmt.Fprintf(stderr, "%s: %s\n", name, printableLines(err.Error()))
	return 1
}

// printableLines returns s with each of its lines made Printable: a message of
// several lines keeps them.
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = Printable(l)
	}
	return strings.Join(lines, "\n")
}

// ErrBadID is the error CheckID wraps.
var ErrBadID = errors.New("invalid id")

// CheckID checks an id that becomes part of NATS subjects and KV keys (a worker
// id): letters, digits, '-', '_' and '.', with no dot at either end and no two
// dots in a row, at most 128 characters. flagName names the setting for the
// error.
func CheckID(flagName, id string) error {
	bad := func(why string) error {
		return fmt.Errorf("%s %q: %w: %s (use letters, digits, '-', '_' and '.', such as worker-1)", flagName, id, ErrBadID, why)
	}
	switch {
	case id == "":
		return bad("empty")
	case len(id) > 128:
		return bad("longer than 128 characters")
	case strings.HasPrefix(id, ".") || strings.HasSuffix(id, "."):
		return bad("a dot at either end")
	case strings.Contains(id, ".."):
		return bad("two dots in a row")
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return bad(fmt.Sprintf("%q is not allowed", r))
		}
	}
	return nil
}

// RedactURL returns the comma-separated server URLs in s without their user
// information (a user and password, or a token), for logs, errors and output.
// It takes every form nats.Connect does: with or without a scheme
// (alice:pw@host:4222 is nats://alice:pw@host:4222), a token alone (tok@host),
// several URLs, and user information url.Parse refuses (a password holding '/',
// '@' or a bad escape): whatever precedes a URL's last '@' goes. A part that is
// not a plausible host[:port] (the piece of a password cut at a comma, which
// nats.Connect cannot use either) is shown as REDACTED.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		scheme, rest := "", p
		if i := strings.Index(p, "://"); i > 0 && isScheme(p[:i]) {
			scheme, rest = p[:i+3], p[i+3:]
		}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = rest[at+1:]
		}
		if !isHostPort(rest) {
			rest = "REDACTED"
		}
		parts[i] = scheme + rest
	}
	return strings.Join(parts, ",")
}

// isScheme reports whether s is a URL scheme (RFC 3986): a letter, then
// letters, digits, '+', '-' or '.'.
func isScheme(s string) bool {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return s != ""
}

// isHostPort reports whether s is a host (a name, an IPv4 address or a
// bracketed IPv6 one), optionally with a numeric port, then optionally a path.
func isHostPort(s string) bool {
	hostport, _, _ := strings.Cut(s, "/")
	host, port := hostport, ""
	if i := strings.LastIndex(hostport, ":"); i >= 0 && !strings.HasSuffix(hostport, "]") {
		host, port = hostport[:i], hostport[i+1:]
		if port == "" || strings.Trim(port, "0123456789") != "" {
			return false
		}
	}
	if inner, ok := strings.CutPrefix(host, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		return ok && inner != "" && strings.Trim(strings.ToLower(inner), "0123456789abcdef:.%") == ""
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// readSecretFile reads a one-line secret from path, trimming the line end.
func readSecretFile(flagName, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flagName, path, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s %s: the file is empty", flagName, path)
	}
	return s, nil
}
