package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/ratefleet/ratefleet/internal/procs"
)

// ExitInterrupted is the exit status after a second interrupt: 128 + SIGINT.
const ExitInterrupted = 130

// Main runs a command the way every ratefleet command runs: run gets a context
// that the first SIGINT or SIGTERM cancels (the command then stops cleanly); a
// second one exits at once with status 130. Main exits with ExitCode's status
// for run's error, and does not return.
//
// When $RATEFLEET_CPU_PROFILE_DIR names a folder, the command writes a CPU
// profile of its whole run there, as <name>-<pid>.pprof, for `go tool pprof`.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := NotifyContext(context.Background(), os.Stderr, os.Exit)
	stopProfile := startCPUProfile(os.Getenv(CPUProfileEnv), name, os.Stderr)
	err := run(ctx)
	stopProfile()
	stop()
	os.Exit(ExitCode(name, err, os.Stderr))
}

// SetGCPercent sets the garbage collector's target (GOGC) to percent, unless
// GOGC is set in the environment getenv reads, which then stands.
func SetGCPercent(getenv func(string) string, percent int) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
}

// TuneProcs keeps the process on as few processors as its CPU use needs until
// ctx ends (package procs), unless GOMAXPROCS is set in the environment getenv
// reads, which then stands.
func TuneProcs(ctx context.Context, getenv func(string) string) {
	if procs.Auto(getenv) {
		go procs.Run(ctx, procs.Config{})
	}
}

// CPUProfileEnv names the variable of the folder Main writes CPU profiles to.
const CPUProfileEnv = "RATEFLEET_CPU_PROFILE_DIR"

// startCPUProfile starts a CPU profile in dir, if dir is set, and returns what
// stops it. A profile that cannot start is reported and skipped: it is a
// diagnostic, never a reason not to run.
func startCPUProfile(dir, name string, stderr io.Writer) (stop func()) {
	if dir == "" {
		return func() {}
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", strings.ReplaceAll(name, " ", "-"), os.Getpid()))
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: no CPU profile: %v\n", name, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "%s: CPU profile: %v\n", name, err)
		}
	}
}

// NotifyContext returns a context cancelled by the first SIGINT or SIGTERM,
// which it tells stderr of. A second SIGINT (Ctrl-C) then tells stderr and
// calls exit(ExitInterrupted) without waiting for anything; a repeated SIGTERM
// does not, since supervisors and process groups resend it to a command that
// is already stopping cleanly. stop releases the signals.
func NotifyContext(parent context.Context, stderr io.Writer, exit func(int)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			if s == os.Interrupt {
				fmt.Fprintln(stderr, "interrupt: stopping cleanly (Ctrl-C again to exit at once)")
			}
			cancel()
		case <-done:
			return
		}
		for {
			select {
			case s := <-sigs:
				if s == os.Interrupt {
					fmt.Fprintln(stderr, "second interrupt: exiting at once")
					exit(ExitInterrupted)
					return
				}
			case <-done:
				return
			}
		}
	}()
	var once bool
	return ctx, func() {
		if once {
			return
		}
		once = true
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

// Version describes the running binary from its build information: the
// module's version, the commit and whether the tree was modified (when the build
// recorded them), and the Go version.
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown version: built without module information)"
	}
	parts := []string{info.Main.Version}
	if parts[0] == "" {
		parts[0] = "(devel)"
	}
	vcs := map[string]string{}
	for _, s := range info.Settings {
		vcs[s.Key] = s.Value
	}
	if rev := vcs["vcs.revision"]; rev != "" {
		commit := "commit " + rev[:min(12, len(rev))]
		if vcs["vcs.modified"] == "true" {
			commit += " (modified)"
		}
		if t := vcs["vcs.time"]; t != "" {
			commit += " of " + t
		}
		parts = append(parts, commit)
	}
	parts = append(parts, info.GoVersion)
	return strings.Join(parts, ", ")
}

// BuildInfo returns the module version, the commit (empty when not recorded)
// and the Go version of the running binary, for ratefleet_build_info.
func BuildInfo() (version, revision, goVersion string) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", "", "unknown"
	}
	version = info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return version, revision, info.GoVersion
}
