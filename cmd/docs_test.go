package cmd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/profile"
)

// docPages returns the README and every page in docs/, by path.
func docPages(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("../docs/*.md")
	require.NoError(t, err)
	pages := map[string]string{}
	for _, p := range append(paths, "../README.md") {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		pages[p] = string(b)
	}
	return pages
}

var (
	fenced = regexp.MustCompile("(?s)```(\\w*)\\n(.*?)```")
	inline = regexp.MustCompile("`([^`\\n]+)`")
	word   = regexp.MustCompile(`^[a-z]+$`)
	flag   = regexp.MustCompile(`(?:^|\s)--?([a-z][a-z0-9-]*)`)
)

// commands is every command the docs may show.
var commands = map[string]bool{"producer": true, "worker": true, "monitor": true, "exchange": true,
	"graveyard": true, "fleet": true, "streams": true, "service": true}

// TestDocs_EveryProfileShownLoads parses every profile the docs show (a YAML
// block that starts a profile with its version), as a worker loads one.
func TestDocs_EveryProfileShownLoads(t *testing.T) {
	n := 0
	for path, text := range docPages(t) {
		for _, m := range fenced.FindAllStringSubmatch(text, -1) {
			if m[1] != "yaml" || !strings.HasPrefix(strings.TrimLeft(m[2], "# \n"), "version: 1") && !strings.Contains(m[2], "\nversion: 1\n") {
				continue
			}
			n++
			_, err := profile.Parse(path, []byte(m[2]))
			require.NoError(t, err, "a profile in %s:\n%s", path, m[2])
		}
	}
	require.Positive(t, n, "the docs show profiles")
}

// TestDocs_EveryCommandShownHasItsFlags runs `--help` for every command line
// the docs show (in a shell block, or inline as `bin/…` or `fleet …`) and
// checks that each flag it uses exists, so the docs cannot drift from the
// commands.
func TestDocs_EveryCommandShownHasItsFlags(t *testing.T) {
	type line struct{ page, text string }
	var lines []line
	for path, text := range docPages(t) {
		for _, m := range fenced.FindAllStringSubmatch(text, -1) {
			if m[1] != "sh" {
				continue
			}
			for _, l := range strings.Split(m[2], "\n") {
				lines = append(lines, line{path, l})
			}
		}
		for _, m := range inline.FindAllStringSubmatch(text, -1) {
			lines = append(lines, line{path, m[1]})
		}
	}
	help := map[string]string{}
	checked := 0
	for _, l := range lines {
		argv, flags := commandLine(l.text)
		if argv == nil {
			continue
		}
		key := strings.Join(argv, " ")
		out, ok := help[key]
		if !ok {
			cmd := exec.Command(filepath.Join(bin, argv[0]), append(argv[1:], "--help")...)
			b, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s: `%s --help`: %s", l.page, key, b)
			out = string(b)
			help[key] = out
		}
		for _, f := range flags {
			require.Regexp(t, `(?m)^\s+-`+regexp.QuoteMeta(f)+`\b`, out, "%s: `%s` uses --%s, which `%s --help` does not list", l.page, l.text, f, key)
		}
		checked++
	}
	require.Greater(t, checked, 20, "the docs show command lines")
}

// commandLine returns the binary and subcommands a line of the docs runs, and
// the flags it uses; nil when the line runs no ratefleet command.
func commandLine(s string) (argv, flags []string) {
	if i := strings.Index(s, " #"); i >= 0 {
		s = s[:i] // a comment
	}
	fields := strings.Fields(s)
	for len(fields) > 0 && strings.Contains(fields[0], "=") && !strings.HasPrefix(fields[0], "-") {
		fields = fields[1:] // VAR=value before the command
	}
	if len(fields) == 0 {
		return nil, nil
	}
	name := strings.TrimPrefix(fields[0], "bin/")
	if !commands[name] || (name == fields[0] && !strings.Contains(s, " --")) {
		return nil, nil // a word in prose, not a command line
	}
	argv = []string{name}
	for _, f := range fields[1:] {
		if !word.MatchString(f) {
			break
		}
		argv = append(argv, f)
	}
	for _, m := range flag.FindAllStringSubmatch(strings.Join(fields[1:], " "), -1) {
		flags = append(flags, m[1])
	}
	return argv, flags
}
