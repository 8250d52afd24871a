// Package cli holds the conventions every ratefleet command shares: how it connects
// to NATS (the nats CLI's flags, environment variables and saved contexts), how
// secrets are kept out of argv and output, and how an error becomes an exit status.
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
	"net/url"
	"os"
	"strings"
)

// DefaultURL is where commands look for NATS when no URL is given anywhere.
const DefaultURL = "nats://127.0.0.1:4222"

// UsageError is a command-line mistake: the command exits with status 2.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usage wraps err, typically from flag.FlagSet.Parse, as a UsageError; flag.ErrHelp
// and nil pass through unchanged.
func Usage(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return UsageError{err}
}

// ExitCode returns the exit status for err: 0 for success and --help, 2 for a
// usage error, 1 for any other error. It prints err on stderr prefixed with the
// command's name, unless it is --help or a flag error the flag package printed.
func ExitCode(name string, err error, stderr io.Writer) int {
	var usage UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	return 1
}

// RedactURL returns the comma-separated URLs in s with their user information
// (user, password or token) removed, for logs and errors.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactOne(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func redactOne(s string) string {
	u, err := url.Parse(s)
	if err == nil && u.User == nil {
		return s
	}
	if err == nil {
		u.User = nil
		return u.String()
	}
	// Not a URL url.Parse takes: cut anything before an @ after the scheme.
	if at := strings.LastIndex(s, "@"); at >= 0 {
		scheme := ""
		if i := strings.Index(s, "://"); i >= 0 && i < at {
			scheme = s[:i+3]
		}
		return scheme + "REDACTED@" + s[at+1:]
	}
	return s
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
