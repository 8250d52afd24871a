package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/host"
	"github.com/ratefleet/ratefleet/wire"
)

// CPUConfig describes the CPU benchmark: for each cell of Keys × Workers, a
// fresh fleet offered more than its keys allow, measured over Duration after
// Warmup, the CPU time of every process read from /proc at both ends.
type CPUConfig struct {
	Bin              string
	Keys, Workers    []int
	Warmup, Duration time.Duration
	// Profile, when it is one of the cells, has that cell's processes write CPU
	// profiles of their whole run, summarised per kind of process by `GoCmd tool
	// pprof`.
	Profile Cell
	GoCmd   string
	// ProfileDir, when set, is where the profiled cell's raw profiles are
	// written and kept, for `go tool pprof` by hand; otherwise they go to a
	// temporary folder removed after the summary.
	ProfileDir string
	// Results is where the requests' served results go (the producer's
	// --results); empty keeps them, the default.
	Results wire.Results
	// Alone adds, for each number of keys, a run of NATS alone (natsAlone)
	// before its cells: what the fleet's messages cost NATS at that rate.
	Alone bool
	// Runs is how many times the whole matrix runs, one round after the other,
	// so that a cell's runs are spread over the benchmark's time rather than
	// caught together in one slow spell of the machine. With more than one,
	// FormatCPU adds each cell's medians. The profiled cell and NATS alone run
	// in the first round only. 0 means 1.
	Runs int
	// Against, when set, is the folder of a second build's binaries to measure
	// beside Bin's: each cell runs with both, one right after the other, the
	// first of the two alternating from one round to the next, and FormatCPU
	// adds the ratios of their medians. The runner (this process) is the same
	// for both, and so are the streams it applies.
	Against string
	Logs    io.Writer
	Logger  *slog.Logger
}

// buildThis and buildBase name the builds of a comparison (CPUConfig.Against):
// this one is CPUConfig.Bin's, the base the other.
const (
	buildThis = ""
	buildBase = "base"
)

// Cell is one point of the CPU benchmark's matrix: how many keys, shared by how
// many worker processes.
type Cell struct{ Keys, Workers int }

// String returns the cell as --profile-cell takes it, such as "100x5".
func (c Cell) String() string { return fmt.Sprintf("%dx%d", c.Keys, c.Workers) }

// ParseCell reads a cell written keys x workers, such as "100x5".
func ParseCell(s string) (Cell, error) {
	k, w, ok := strings.Cut(s, "x")
	keys, err1 := strconv.Atoi(k)
	workers, err2 := strconv.Atoi(w)
	if !ok || err1 != nil || err2 != nil || keys < 1 || workers < 1 {
		return Cell{}, fmt.Errorf("cell %q: want keys x workers, such as 100x5", s)
	}
	return Cell{Keys: keys, Workers: workers}, nil
}

// overload is how far above its keys' hard limit (20 a second each) the producer
// offers: enough that the queue never runs dry, so the fleet runs at its bound.
const overload = 1.1

// CPUUse is the CPU time each kind of process used over a span.
type CPUUse struct {
	Workers, NATS, Simulator, Producer, Monitor time.Duration
	// Runner is the benchmark's own process (fleet cpu): not part of a
	// deployment, and left out of All.
	Runner time.Duration
}

// All returns the CPU of every process of the fleet: workers, NATS, simulator,
// producer and monitor.
func (u CPUUse) All() time.Duration {
	return u.Workers + u.NATS + u.Simulator + u.Producer + u.Monitor
}

func (u CPUUse) sub(v CPUUse) CPUUse {
	return CPUUse{Workers: u.Workers - v.Workers, NATS: u.NATS - v.NATS, Simulator: u.Simulator - v.Simulator,
		Producer: u.Producer - v.Producer, Monitor: u.Monitor - v.Monitor, Runner: u.Runner - v.Runner}
}

// CPURow is one cell's result, over its measured window.
type CPURow struct {
	Cell
	Window time.Duration
	// Published is what the producer published in the window; OK what the
	// simulator answered 200; RateLimited and BadNonce its 429s and 400s.
	Published, OK, RateLimited, BadNonce uint64
	// BadNonceMinute is the most 400s in any minute of the window (read every
	// badNonceEvery), or all of them in a window of a minute or less: 400s
	// that come in bursts show here.
	BadNonceMinute uint64
	// PeakRSS is the most memory each kind of process held resident by the
	// window's end, the largest of the workers for them.
	PeakRSS RSS
	// Bound is what the keys can provably carry (package limiter's doc).
	Bound float64
	CPU   CPUUse
	// BoxBusy is the machine's busy share of its cores, every process of every
	// user counted.
	BoxBusy float64
	// Answers is what the workers' limiters were answered in the window (by
	// the workers' reports, a second apart), and BusyAnswers how many of those
	// came while the worker's machine counted as busy: each bounded its own
	// request, which holds a key under its bound (package limiter).
	Answers, BusyAnswers uint64
	// Profiled is set when the processes were writing CPU profiles meanwhile
	// (which costs a little CPU).
	Profiled bool
	// Run is the round of the matrix the row is from, from 1 (CPUConfig.Runs).
	Run int
	// Build is "base" for a row of CPUConfig.Against's build, "" for Bin's.
	Build string
}

// RSS is peak resident memory, in bytes, per kind of process.
type RSS struct{ Worker, NATS, Simulator int64 }

// BusyShare returns the share of the limiters' answers that came on a busy
// machine, as a percentage, or "-" when the reports counted none.
func (r CPURow) BusyShare() string {
	if r.Answers == 0 || r.BusyAnswers > r.Answers {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(r.BusyAnswers)/float64(r.Answers))
}

// OKPerSecond returns the requests answered 200 a second.
func (r CPURow) OKPerSecond() float64 { return float64(r.OK) / r.Window.Seconds() }

// PerRequest returns d per request answered 200, in milliseconds.
func (r CPURow) PerRequest(d time.Duration) float64 {
	if r.OK == 0 {
		return 0
	}
	return float64(d) / float64(time.Millisecond) / float64(r.OK)
}

// CoresPer1000Keys returns the cores that CPU per request d would take for
// 1,000 keys each served at the per-key bound.
func CoresPer1000Keys(msPerRequest float64) float64 {
	return msPerRequest * 1000 * perKeyBound / 1000
}

// CPUResult is the benchmark's rows and, for the profiled cell, the top of each
// kind of process's CPU profile.
type CPUResult struct {
	Rows []CPURow
	// Alone holds the runs of NATS alone (CPUConfig.Alone).
	Alone []AloneRow
	// Profiles holds `go tool pprof -top` of the profiled cell, by kind of process.
	Profiles []KindProfile
	// Load is /proc/loadavg when the benchmark started.
	Load    string
	Started time.Time
}

// KindProfile is the top of one kind of process's CPU profiles, merged.
type KindProfile struct {
	Kind  string
	Cell  Cell
	Files int
	Top   string
}

// CPU runs the CPU benchmark, one row a cell and a run.
func CPU(ctx context.Context, cfg CPUConfig) (CPUResult, error) {
	res := CPUResult{Started: time.Now(), Load: loadAverage()}
	runs := max(cfg.Runs, 1)
	for run := 1; run <= runs; run++ {
		for _, k := range cfg.Keys {
			if cfg.Alone && run == 1 {
				cfg.Logger.Info("benchmark: cpu, NATS alone", "keys", k, "duration", cfg.Duration)
				row, err := natsAlone(ctx, cfg, k)
				if err != nil {
					return res, fmt.Errorf("cpu, NATS alone, %d keys: %w", k, err)
				}
				res.Alone = append(res.Alone, row)
			}
			for _, w := range cfg.Workers {
				c := Cell{Keys: k, Workers: w}
				for _, build := range builds(cfg, run) {
					if ctx.Err() != nil {
						return res, ctx.Err()
					}
					bc := cfg
					if build == buildBase {
						bc.Bin = cfg.Against
					}
					cfg.Logger.Info("benchmark: cpu", "cell", c.String(), "build", bc.Bin, "run", run, "of", runs, "offered_rate", float64(k)*20*overload, "duration", cfg.Duration)
					row, profiles, err := cpuCell(ctx, bc, c, run == 1 && build == buildThis && c == cfg.Profile)
					if err != nil {
						return res, fmt.Errorf("cpu %s, run %d, %s: %w", c, run, bc.Bin, err)
					}
					row.Run, row.Build = run, build
					res.Rows = append(res.Rows, row)
					res.Profiles = append(res.Profiles, profiles...)
				}
			}
		}
	}
	return res, nil
}

// builds returns the builds a cell runs on in round run, in order: this one
// alone, or both with the first alternating from round to round.
func builds(cfg CPUConfig, run int) []string {
	switch {
	case cfg.Against == "":
		return []string{buildThis}
	case run%2 == 0:
		return []string{buildBase, buildThis}
	}
	return []string{buildThis, buildBase}
}

// buildMark is how a table marks a row of build: nothing for this one.
func buildMark(build string) string {
	if build == buildThis {
		return ""
	}
	return " (" + build + ")"
}

// cpuCell runs one cell: a fleet whose NATS runs in a process of its own, the
// producer offering overload times the keys' hard limit, CPU read per process
// at both ends of the window.
func cpuCell(ctx context.Context, cfg CPUConfig, c Cell, profiled bool) (CPURow, []KindProfile, error) {
	row := CPURow{Cell: c, Bound: float64(c.Keys) * perKeyBound, Profiled: profiled}
	var env []string
	var profDir string
	if row.Profiled {
		dir := cfg.ProfileDir
		if dir == "" {
			tmp, err := os.MkdirTemp("", "ratefleet-cpu-profiles-")
			if err != nil {
				return row, nil, fmt.Errorf("profiles folder: %w", err)
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		} else if err := os.MkdirAll(dir, 0o755); err != nil {
			return row, nil, fmt.Errorf("profiles folder: %w", err)
		}
		profDir, env = dir, []string{cli.CPUProfileEnv + "=" + dir}
	}
	rate := float64(c.Keys) * 20 * overload
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Workers: c.Workers, Keys: manyKeys(c.Keys),
		// The producer outlives the window; Down stops it.
		Duration:     cfg.Warmup + cfg.Duration + 10*time.Second,
		ProducerArgs: []string{"--shape", "rate", "--rate", fmt.Sprint(rate), "--ttl", "10m", "--progress", "0", "--results", string(results(cfg.Results))},
		WorkerArgs:   []string{"--keys", fmt.Sprint((c.Keys + c.Workers - 1) / c.Workers)},
		Monitor:      true, NATSProcess: true, Env: env,
		Logs: cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return row, nil, err
	}
	down := sync.OnceFunc(f.Down)
	defer down()
	if err := f.StartProducer(); err != nil {
		return row, nil, err
	}
	if err := fleet.Sleep(ctx, cfg.Warmup); err != nil {
		return row, nil, err
	}
	s0, err := sampleFleet(ctx, f)
	if err != nil {
		return row, nil, err
	}
	badNonces, err := watchBadNonces(ctx, f.ExchangeURL, cfg.Duration)
	if err != nil {
		return row, nil, err
	}
	s1, err := sampleFleet(ctx, f)
	if err != nil {
		return row, nil, err
	}
	row.BadNonceMinute = mostInAMinute(slices.Concat([]uint64{s0.ex.BadNonce}, badNonces, []uint64{s1.ex.BadNonce}))
	row.PeakRSS = RSS{NATS: f.NATSProc.PeakRSS(), Simulator: f.Exchange.PeakRSS()}
	for _, w := range f.Workers {
		row.PeakRSS.Worker = max(row.PeakRSS.Worker, w.PeakRSS())
	}
	row.Window = s1.at.Sub(s0.at)
	row.CPU = s1.cpu.sub(s0.cpu)
	row.Published = s1.published - s0.published
	row.OK, row.RateLimited, row.BadNonce = s1.ex.OK-s0.ex.OK, s1.ex.RateLimited-s0.ex.RateLimited, s1.ex.BadNonce-s0.ex.BadNonce
	if s1.answers >= s0.answers && s1.busy >= s0.busy {
		// A key that changed holders in the window restarts its limiter's
		// counts: then no share is shown.
		row.Answers, row.BusyAnswers = s1.answers-s0.answers, s1.busy-s0.busy
	}
	if s1.boxTotal > s0.boxTotal {
		row.BoxBusy = float64(s1.boxBusy-s0.boxBusy) / float64(s1.boxTotal-s0.boxTotal)
	}
	if !row.Profiled {
		return row, nil, nil
	}
	kinds := processKinds(f)
	down() // every process writes its profile as it stops
	profiles, err := topProfiles(ctx, cfg.GoCmd, profDir, kinds, c)
	return row, profiles, err
}

// badNonceEvery is how often the CPU benchmark reads the simulator's 400s in a
// cell's window, to find the minute with the most.
const badNonceEvery = 10 * time.Second

// watchBadNonces waits out a window of d, reading the simulator's count of 400s
// every badNonceEvery, and returns the counts read (none at the window's end:
// its sample reads that one).
func watchBadNonces(ctx context.Context, url string, d time.Duration) ([]uint64, error) {
	end := time.Now().Add(d)
	var counts []uint64
	for {
		if err := fleet.Sleep(ctx, min(time.Until(end), badNonceEvery)); err != nil {
			return nil, err
		}
		if time.Until(end) <= 0 {
			return counts, nil
		}
		t, err := fleet.FetchExchangeTotals(ctx, url)
		if err != nil {
			return nil, err
		}
		counts = append(counts, t.BadNonce)
	}
}

// mostInAMinute returns the largest rise of a running count read every
// badNonceEvery over any minute of readings (the whole rise when they span a
// minute or less).
func mostInAMinute(counts []uint64) uint64 {
	span := int(time.Minute / badNonceEvery)
	var most uint64
	for i := range counts {
		j := min(i+span, len(counts)-1)
		most = max(most, counts[j]-counts[i])
	}
	return most
}

// results is mode, keep when empty.
func results(mode wire.Results) wire.Results {
	if mode == "" {
		return wire.ResultsKeep
	}
	return mode
}

// fleetSample is what the CPU benchmark reads at each end of its window.
type fleetSample struct {
	at                time.Time
	cpu               CPUUse
	ex                fleet.ExchangeTotals
	published         uint64
	boxBusy, boxTotal uint64
	answers, busy     uint64 // the limiters' answers, and those on a busy machine
}

// sampleFleet reads every process's CPU so far, the simulator's counts, the
// requests published and the machine's CPU. A process that has exited would
// read 0 and spoil the difference: that is an error.
func sampleFleet(ctx context.Context, f *fleet.Fleet) (fleetSample, error) {
	var s fleetSample
	procs := append([]*fleet.Proc{f.NATSProc, f.Exchange, f.Producer, f.Monitor}, f.Workers...)
	for _, p := range procs {
		select {
		case <-p.Done():
			return s, fmt.Errorf("%s exited during the measured window: %w", p.Name, p.Wait())
		default:
		}
	}
	s.at = time.Now()
	for _, w := range f.Workers {
		s.cpu.Workers += w.CPU()
	}
	s.cpu.NATS, s.cpu.Simulator, s.cpu.Producer, s.cpu.Monitor = f.NATSProc.CPU(), f.Exchange.CPU(), f.Producer.CPU(), f.Monitor.CPU()
	s.cpu.Runner = fleet.SelfCPU()
	s.boxBusy, s.boxTotal = host.CPU()
	var err error
	if s.ex, err = fleet.FetchExchangeTotals(ctx, f.ExchangeURL); err != nil {
		return s, err
	}
	sc := f.Conn.Streams
	st, err := f.Conn.JS.Stream(ctx, sc.Requests.Stream.Name)
	if err != nil {
		return s, fmt.Errorf("read the requests stream: %w", err)
	}
	s.published = st.CachedInfo().State.LastSeq
	reports, err := fleet.LastReports(ctx, f.Conn.JS, sc.Stats.Stream.Name)
	if err != nil {
		return s, fmt.Errorf("read the workers' reports: %w", err)
	}
	for _, r := range reports {
		for _, k := range r.Keys {
			s.answers += k.Answers
			s.busy += k.BusyAnswers
		}
	}
	return s, nil
}

// processKinds maps each of f's processes to its kind.
func processKinds(f *fleet.Fleet) map[int]string {
	kinds := map[int]string{f.NATSProc.PID(): "NATS", f.Exchange.PID(): "simulator", f.Producer.PID(): "producer", f.Monitor.PID(): "monitor"}
	for _, w := range f.Workers {
		kinds[w.PID()] = "workers"
	}
	return kinds
}

// topProfiles runs `goCmd tool pprof -top -nodecount=10` on each kind's
// profiles in dir (named <command>-<pid>.pprof by cli.Main), the workers' merged.
func topProfiles(ctx context.Context, goCmd, dir string, kinds map[int]string, c Cell) ([]KindProfile, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pprof"))
	if err != nil {
		return nil, fmt.Errorf("list the profiles: %w", err)
	}
	byKind := profilesByKind(files, kinds)
	var out []KindProfile
	for _, kind := range []string{"workers", "NATS", "simulator", "producer", "monitor"} {
		if len(byKind[kind]) == 0 {
			out = append(out, KindProfile{Kind: kind, Cell: c, Top: "(no profile written)\n"})
			continue
		}
		args := append([]string{"tool", "pprof", "-top", "-nodecount=10"}, byKind[kind]...)
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, goCmd, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return out, fmt.Errorf("%s tool pprof on the %s profiles of cell %s: %w: %s", goCmd, kind, c, err, strings.TrimSpace(stderr.String()))
		}
		out = append(out, KindProfile{Kind: kind, Cell: c, Files: len(byKind[kind]), Top: stdout.String()})
	}
	return out, nil
}

// profilesByKind sorts profile files, named <command>-<pid>.pprof, by the kind
// of the process whose pid their name ends with; others are left out.
func profilesByKind(files []string, kinds map[int]string) map[string][]string {
	byKind := map[string][]string{}
	for _, file := range files {
		base := strings.TrimSuffix(filepath.Base(file), ".pprof")
		pid, err := strconv.Atoi(base[strings.LastIndexByte(base, '-')+1:])
		if kind, ok := kinds[pid]; err == nil && ok {
			byKind[kind] = append(byKind[kind], file)
		}
	}
	return byKind
}

// loadAverage returns the first three fields of /proc/loadavg, or "unknown".
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// mib returns n bytes in MiB.
func mib(n int64) float64 { return float64(n) / (1 << 20) }

// FormatCPU renders the rows as one Markdown table, then the projection and the
// profiles.
func FormatCPU(res CPUResult, cfg CPUConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU per request: %s, load average %s at start. Each cell a fresh fleet (NATS in a process of its own), offered %.1f × 20 req/s a key (time to live 10 min, results %s), %s measured after %s warm-up; CPU time (utime + stime, /proc/<pid>/stat at %d ticks a second) per request answered 200 over the window. \"all\" is every process of the fleet; the runner (this benchmark's process) is shown apart. Bound: keys × 20 / 1043.5 ms. \"400 most a minute\": the simulator's 400s read every %s, the most in any minute of the window. \"busy answers\": the share of the limiters' answers that came while their worker's machine counted as busy (each then bounds its own request: package limiter), from the workers' reports. Peak RSS: VmHWM of /proc/<pid>/status at the window's end, the largest worker's.\n\n",
		res.Started.UTC().Format("2006-01-02 15:04 MST"), res.Load, overload, results(cfg.Results), cfg.Duration, cfg.Warmup, fleet.ClockTicks(), badNonceEvery)
	b.WriteString("| keys | worker procs | published/s | req/s | of bound | 429 | 400 | 400 most a minute | CPU ms/req: workers | NATS | simulator | producer | monitor | all | runner | cores / 1,000 keys | machine busy | busy answers | peak RSS MiB: a worker | NATS | simulator |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	runs := max(cfg.Runs, 1)
	for _, r := range res.Rows {
		mark := ""
		if runs > 1 {
			mark = fmt.Sprintf(" (run %d)", r.Run)
		}
		mark += buildMark(r.Build)
		if r.Profiled {
			mark += " (profiled)"
		}
		all := r.PerRequest(r.CPU.All())
		fmt.Fprintf(&b, "| %d | %d%s | %.1f | %.1f | %.3f | %d | %d | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %.0f%% | %s | %.0f | %.0f | %.0f |\n",
			r.Keys, r.Workers, mark, float64(r.Published)/r.Window.Seconds(), r.OKPerSecond(), r.OKPerSecond()/r.Bound, r.RateLimited, r.BadNonce, r.BadNonceMinute,
			r.PerRequest(r.CPU.Workers), r.PerRequest(r.CPU.NATS), r.PerRequest(r.CPU.Simulator), r.PerRequest(r.CPU.Producer), r.PerRequest(r.CPU.Monitor),
			all, r.PerRequest(r.CPU.Runner), CoresPer1000Keys(all), 100*r.BoxBusy, r.BusyShare(),
			mib(r.PeakRSS.Worker), mib(r.PeakRSS.NATS), mib(r.PeakRSS.Simulator))
	}
	cells := summarize(res.Rows)
	if (runs > 1 || cfg.Against != "") && len(cells) > 0 {
		if runs > 1 {
			fmt.Fprintf(&b, "\nMedians of each cell's runs (the matrix ran %d times, one round after the other), the least and the most in brackets; 429: all the runs' together:\n\n", runs)
		} else {
			b.WriteString("\nEach cell's one run on each build:\n\n")
		}
		b.WriteString("| keys | worker procs | runs | of bound | 429 | 400 | CPU ms/req: workers | NATS | simulator | producer | monitor | all | cores / 1,000 keys | machine busy |\n")
		b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range cells {
			fmt.Fprintf(&b, "| %d | %d%s | %d | %.3f (%.3f to %.3f) | %d | %.0f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f (%.3f to %.3f) | %.2f | %.0f%% |\n",
				c.Keys, c.Workers, buildMark(c.build), c.runs, c.ofBound.median, c.ofBound.least, c.ofBound.most, c.rateLimited, c.badNonce.median,
				c.workers.median, c.nats.median, c.simulator.median, c.producer.median, c.monitor.median,
				c.all.median, c.all.least, c.all.most, CoresPer1000Keys(c.all.median), 100*c.busy.median)
		}
	}
	if cfg.Against != "" {
		b.WriteString(formatRatios(cells, cfg.Against))
	}
	if len(cells) > 0 {
		most := slices.MaxFunc(cells, func(a, b cellSummary) int { return a.Keys - b.Keys }).Keys
		from := "from the cells with the most keys"
		if runs > 1 {
			from = "from the medians of the cells with the most keys"
		}
		fmt.Fprintf(&b, "\nProjection: cores per 1,000 keys at full rate = CPU ms per request × 1,000 keys × 19.17 req/s a key / 1,000 ms, %s:\n\n", from)
		for _, c := range cells {
			if c.Keys != most || c.build != buildThis {
				continue
			}
			fmt.Fprintf(&b, "- %d keys, %d worker processes: %.3f ms × 1,000 × %.2f / 1,000 = %.2f cores (%.2f without the simulator, which stands in for the upstream)\n",
				c.Keys, c.Workers, c.all.median, perKeyBound, CoresPer1000Keys(c.all.median), CoresPer1000Keys(c.fleetOnly.median))
		}
	}
	if len(res.Alone) > 0 {
		b.WriteString(formatAlone(res.Alone))
	}
	for _, p := range res.Profiles {
		fmt.Fprintf(&b, "\nCPU profile of the %s, cell %s (%d keys, %d worker processes), %d process(es) merged, whole run (`go tool pprof -top -nodecount=10`):\n\n```\n%s```\n",
			p.Kind, p.Cell, p.Cell.Keys, p.Cell.Workers, p.Files, p.Top)
	}
	return b.String()
}

// cellSummary is one cell's runs: the median of each figure FormatCPU shows,
// with the least and the most.
type cellSummary struct {
	Cell
	build       string // CPURow.Build
	runs        int
	rateLimited uint64 // every run's together: any 429 counts
	badNonce    spread
	ofBound     spread
	workers     spread
	nats        spread
	simulator   spread
	producer    spread
	monitor     spread
	all         spread
	fleetOnly   spread // all but the simulator
	busy        spread
}

// spread is the median of a figure over runs, with the least and the most.
type spread struct{ median, least, most float64 }

func spreadOf(xs []float64) spread {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	n := len(xs)
	if n == 0 {
		return spread{}
	}
	m := xs[n/2]
	if n%2 == 0 {
		m = (xs[n/2-1] + xs[n/2]) / 2
	}
	return spread{median: m, least: xs[0], most: xs[n-1]}
}

// summarize groups rows by build and cell, in the order they first ran.
func summarize(rows []CPURow) []cellSummary {
	type group struct {
		build string
		cell  Cell
	}
	var order []group
	byGroup := map[group][]CPURow{}
	for _, r := range rows {
		g := group{r.Build, r.Cell}
		if _, ok := byGroup[g]; !ok {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], r)
	}
	out := make([]cellSummary, 0, len(order))
	for _, g := range order {
		c, rs := g.cell, byGroup[g]
		of := func(f func(CPURow) float64) spread {
			xs := make([]float64, len(rs))
			for i, r := range rs {
				xs[i] = f(r)
			}
			return spreadOf(xs)
		}
		s := cellSummary{Cell: c, build: g.build, runs: len(rs),
			badNonce:  of(func(r CPURow) float64 { return float64(r.BadNonce) }),
			ofBound:   of(func(r CPURow) float64 { return r.OKPerSecond() / r.Bound }),
			workers:   of(func(r CPURow) float64 { return r.PerRequest(r.CPU.Workers) }),
			nats:      of(func(r CPURow) float64 { return r.PerRequest(r.CPU.NATS) }),
			simulator: of(func(r CPURow) float64 { return r.PerRequest(r.CPU.Simulator) }),
			producer:  of(func(r CPURow) float64 { return r.PerRequest(r.CPU.Producer) }),
			monitor:   of(func(r CPURow) float64 { return r.PerRequest(r.CPU.Monitor) }),
			all:       of(func(r CPURow) float64 { return r.PerRequest(r.CPU.All()) }),
			fleetOnly: of(func(r CPURow) float64 { return r.PerRequest(r.CPU.All() - r.CPU.Simulator) }),
			busy:      of(func(r CPURow) float64 { return r.BoxBusy }),
		}
		for _, r := range rs {
			s.rateLimited += r.RateLimited
		}
		out = append(out, s)
	}
	return out
}

// formatRatios compares each cell's medians on this build with the base
// build's (CPUConfig.Against).
func formatRatios(cells []cellSummary, against string) string {
	base := map[Cell]cellSummary{}
	for _, c := range cells {
		if c.build == buildBase {
			base[c.Cell] = c
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nThis build against the base (%s), each cell's medians; a ratio under 1 is less on this build:\n\n", against)
	b.WriteString("| keys | worker procs | of bound: this | base | 429: this | base | CPU ms/req, all: this | base | this / base | workers: this / base |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range cells {
		o, ok := base[c.Cell]
		if c.build != buildThis || !ok {
			continue
		}
		fmt.Fprintf(&b, "| %d | %d | %.3f | %.3f | %d | %d | %.3f | %.3f | %s | %s |\n",
			c.Keys, c.Workers, c.ofBound.median, o.ofBound.median, c.rateLimited, o.rateLimited,
			c.all.median, o.all.median, ratio(c.all.median, o.all.median), ratio(c.workers.median, o.workers.median))
	}
	return b.String()
}

// ratio returns a / b to three places, or "-" when b is 0.
func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", a/b)
}
