package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseCell(t *testing.T) {
	tests := []struct {
		in   string
		want Cell
		ok   bool
	}{
		{"100x5", Cell{Keys: 100, Workers: 5}, true},
		{"5x1", Cell{Keys: 5, Workers: 1}, true},
		{"100", Cell{}, false},
		{"0x5", Cell{}, false},
		{"5x0", Cell{}, false},
		{"ax5", Cell{}, false},
		{"5x5x5", Cell{}, false},
		{"", Cell{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCell(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("ParseCell(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
			if tc.ok && got.String() != tc.in {
				t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
			}
		})
	}
}

func TestCPURow_PerRequestAndProjection(t *testing.T) {
	r := CPURow{Cell: Cell{Keys: 100, Workers: 5}, Window: 20 * time.Second, OK: 4000, Bound: 100 * perKeyBound,
		CPU: CPUUse{Workers: 6 * time.Second, NATS: 2 * time.Second, Simulator: time.Second, Producer: 800 * time.Millisecond,
			Monitor: 200 * time.Millisecond, Runner: 4 * time.Second}}
	// 10 s over 4,000 requests; the runner's 4 s are not the fleet's.
	if got := r.PerRequest(r.CPU.All()); got != 2.5 {
		t.Errorf("all: %v ms/req, want 2.5", got)
	}
	if got := r.PerRequest(r.CPU.Workers); got != 1.5 {
		t.Errorf("workers: %v ms/req, want 1.5", got)
	}
	if got := r.OKPerSecond(); got != 200 {
		t.Errorf("OKPerSecond = %v, want 200", got)
	}
	// 2.5 ms a request × 19,166 requests a second = 47.9 cores.
	if got := CoresPer1000Keys(2.5); got < 47.90 || got > 47.93 {
		t.Errorf("CoresPer1000Keys(2.5) = %v, want 2.5 × 1000 × 20 / 1.0435 / 1000 = 47.92", got)
	}
	if got := (CPURow{}).PerRequest(time.Second); got != 0 {
		t.Errorf("no request served: %v ms/req, want 0", got)
	}
}

func TestFormatCPU_OneRowACellAndTheProjectionFromTheMostKeys(t *testing.T) {
	row := func(keys, workers int, profiled bool) CPURow {
		return CPURow{Cell: Cell{Keys: keys, Workers: workers}, Window: 10 * time.Second, OK: uint64(keys) * 190, Published: uint64(keys) * 220,
			Bound: float64(keys) * perKeyBound, CPU: CPUUse{Workers: time.Duration(keys) * 100 * time.Millisecond}, Profiled: profiled}
	}
	profiled := row(100, 5, true)
	profiled.BadNonce, profiled.BadNonceMinute = 7, 3
	profiled.PeakRSS = RSS{Worker: 60 << 20, NATS: 101 << 20, Simulator: 42<<20 + 1<<19}
	profiled.Answers, profiled.BusyAnswers = 19_100, 14_325
	res := CPUResult{Rows: []CPURow{row(5, 2, false), row(100, 2, false), profiled},
		Profiles: []KindProfile{{Kind: "workers", Cell: Cell{Keys: 100, Workers: 5}, Files: 5, Top: "flat flat%\n"}}}
	out := FormatCPU(res, CPUConfig{Duration: 10 * time.Second, Warmup: time.Second})
	lines := strings.Split(out, "\n")
	rows := slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return !strings.HasPrefix(l, "| ") || strings.HasPrefix(l, "| keys") })
	if len(rows) != 3 {
		t.Fatalf("%d table rows, want 3:\n%s", len(rows), out)
	}
	// 100 keys: 10 s of workers' CPU over 19,000 requests = 0.526 ms.
	if want := "| 100 | 5 (profiled) | 2200.0 | 1900.0 | 0.991 | 0 | 7 | 3 | 0.526 |"; !strings.HasPrefix(rows[2], want) {
		t.Errorf("row %q, want it to start %q", rows[2], want)
	}
	if want := "| 0% | 75% | 60 | 101 | 42 |"; !strings.HasSuffix(rows[2], want) {
		t.Errorf("row %q, want it to end with the machine busy, the answers on a busy machine and the peak RSS %q", rows[2], want)
	}
	if want := "| 0% | - | 0 | 0 | 0 |"; !strings.HasSuffix(rows[0], want) {
		t.Errorf("row %q, want it to end %q: no answers counted", rows[0], want)
	}
	var projections []string
	for _, l := range lines {
		if strings.HasPrefix(l, "- ") {
			projections = append(projections, l)
		}
	}
	if len(projections) != 2 || !strings.HasPrefix(projections[0], "- 100 keys, 2 worker") || !strings.HasPrefix(projections[1], "- 100 keys, 5 worker") {
		t.Errorf("projections %q, want one for each 100-key cell", projections)
	}
	if !strings.Contains(out, "= 10.09 cores") {
		t.Errorf("no projection of 0.526 ms × 19.17 = 10.09 cores in:\n%s", out)
	}
	if !strings.Contains(out, "CPU profile of the workers, cell 100x5 (100 keys, 5 worker processes), 5 process(es)") {
		t.Errorf("no profile block in:\n%s", out)
	}
}

func TestFormatCPU_MediansOfEachCellsRuns(t *testing.T) {
	row := func(keys, run int, ok uint64, workers time.Duration, rateLimited, badNonce uint64) CPURow {
		return CPURow{Cell: Cell{Keys: keys, Workers: 1}, Run: run, Window: 10 * time.Second, OK: ok, Published: ok,
			Bound: float64(keys) * perKeyBound, RateLimited: rateLimited, BadNonce: badNonce, CPU: CPUUse{Workers: workers}}
	}
	first := row(100, 1, 19_000, 9500*time.Millisecond, 0, 3) // 0.991 of the bound, 0.5 ms a request
	first.Profiled = true
	res := CPUResult{Rows: []CPURow{
		first,
		row(200, 1, 37_000, 11100*time.Millisecond, 0, 0), // 0.3 ms
		row(100, 2, 18_000, 10800*time.Millisecond, 2, 9), // 0.939, 0.6 ms
		row(200, 2, 36_000, 14400*time.Millisecond, 1, 0), // 0.4 ms
		row(100, 3, 18_500, 7400*time.Millisecond, 0, 5),  // 0.965, 0.4 ms
	}}
	out := FormatCPU(res, CPUConfig{Duration: 10 * time.Second, Runs: 3})
	containsAll(t, out,
		"| 100 | 1 (run 1) (profiled) | 1900.0 |",
		"| 100 | 1 (run 2) | 1800.0 |",
		"Medians of each cell's runs (the matrix ran 3 times",
		// Odd runs: the middle one; 429s added up; 400s the median.
		"| 100 | 1 | 3 | 0.965 (0.939 to 0.991) | 2 | 5 | 0.500 | 0.000 | 0.000 | 0.000 | 0.000 | 0.500 (0.400 to 0.600) | 9.58 | 0% |",
		// Even runs: between the middle two.
		"| 200 | 1 | 2 | 0.952 (0.939 to 0.965) | 1 | 0 | 0.350 |",
		"from the medians of the cells with the most keys",
		"- 200 keys, 1 worker processes: 0.350 ms × 1,000 × 19.17 / 1,000 = 6.71 cores",
	)
	oneProjection(t, out, "from the one 200-key cell's medians")

	once := FormatCPU(CPUResult{Rows: res.Rows[:2]}, CPUConfig{Duration: 10 * time.Second})
	if strings.Contains(once, "Medians") || strings.Contains(once, "(run ") {
		t.Errorf("one run: no medians and no run numbers, got:\n%s", once)
	}
}

func TestFormatCPU_ThisBuildAgainstTheBase(t *testing.T) {
	row := func(build string, run int, ok uint64, workers, nats time.Duration) CPURow {
		return CPURow{Cell: Cell{Keys: 100, Workers: 1}, Build: build, Run: run, Window: 10 * time.Second, OK: ok, Published: ok,
			Bound: 100 * perKeyBound, CPU: CPUUse{Workers: workers, NATS: nats}}
	}
	res := CPUResult{Rows: []CPURow{
		row(buildThis, 1, 19_000, 7600*time.Millisecond, 1900*time.Millisecond), // 0.4 + 0.1 ms
		row(buildBase, 1, 19_000, 9500*time.Millisecond, 1900*time.Millisecond), // 0.5 + 0.1 ms
		row(buildBase, 2, 18_000, 9000*time.Millisecond, 1800*time.Millisecond), // 0.5 + 0.1 ms
		row(buildThis, 2, 18_000, 7200*time.Millisecond, 1800*time.Millisecond), // 0.4 + 0.1 ms
	}}
	out := FormatCPU(res, CPUConfig{Duration: 10 * time.Second, Runs: 2, Against: "/old/bin"})
	containsAll(t, out,
		"| 100 | 1 (run 1) (base) | 1900.0 |",
		"| 100 | 1 (base) | 2 | 0.965 (0.939 to 0.991) | 0 | 0 | 0.500 | 0.100 |",
		"This build against the base (/old/bin)",
		// 0.5 ms against 0.6: 0.833; the workers 0.4 against 0.5: 0.8.
		"| 100 | 1 | 0.965 | 0.965 | 0 | 0 | 0.500 | 0.600 | 0.833 | 0.800 |",
		"- 100 keys, 1 worker processes: 0.500 ms",
	)
	oneProjection(t, out, "from this build's medians")
}

// containsAll checks that out holds each of wants.
func containsAll(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// oneProjection checks that out projects cores per 1,000 keys once, from what.
func oneProjection(t *testing.T, out, what string) {
	t.Helper()
	if strings.Count(out, "\n- ") != 1 {
		t.Errorf("want one projection, %s, in:\n%s", what, out)
	}
}

func TestBuilds_AlternateTheFirstFromRoundToRound(t *testing.T) {
	tests := []struct {
		against string
		run     int
		want    []string
	}{
		{"", 1, []string{buildThis}},
		{"", 2, []string{buildThis}},
		{"/old", 1, []string{buildThis, buildBase}},
		{"/old", 2, []string{buildBase, buildThis}},
		{"/old", 3, []string{buildThis, buildBase}},
	}
	for _, tc := range tests {
		if got := builds(CPUConfig{Against: tc.against}, tc.run); !slices.Equal(got, tc.want) {
			t.Errorf("builds(against %q, run %d) = %q, want %q", tc.against, tc.run, got, tc.want)
		}
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		a, b float64
		want string
	}{{1, 2, "0.500"}, {3, 2, "1.500"}, {1, 0, "-"}} {
		if got := ratio(tc.a, tc.b); got != tc.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestSpreadOf(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want spread
	}{
		{"none", nil, spread{}},
		{"one", []float64{2}, spread{2, 2, 2}},
		{"odd, unsorted", []float64{5, 1, 3}, spread{3, 1, 5}},
		{"even: between the middle two", []float64{4, 1, 2, 10}, spread{3, 1, 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			if got := spreadOf(tc.in); got != tc.want {
				t.Errorf("spreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Errorf("spreadOf sorted its argument: %v", tc.in)
			}
		})
	}
}

func TestProfilesByKind_ByThePIDInTheName(t *testing.T) {
	kinds := map[int]string{11: "workers", 12: "workers", 20: "NATS", 30: "simulator"}
	files := []string{"/p/worker-11.pprof", "/p/worker-12.pprof", "/p/fleet-20.pprof", "/p/exchange-30.pprof", "/p/worker-99.pprof", "/p/odd.pprof"}
	got := profilesByKind(files, kinds)
	want := map[string][]string{"workers": {"/p/worker-11.pprof", "/p/worker-12.pprof"}, "NATS": {"/p/fleet-20.pprof"}, "simulator": {"/p/exchange-30.pprof"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}

func TestMostInAMinute(t *testing.T) {
	// Readings of a running count, one every badNonceEvery (10 s): six
	// intervals make a minute.
	tests := []struct {
		name   string
		counts []uint64
		want   uint64
	}{
		{"no reading", nil, 0},
		{"one reading", []uint64{4}, 0},
		{"a window under a minute: all of it", []uint64{4, 6, 9}, 5},
		{"exactly a minute", []uint64{0, 1, 2, 3, 4, 5, 6}, 6},
		{"steady: a minute's worth", []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 6},
		{"a burst late in the window", []uint64{0, 0, 0, 0, 0, 0, 0, 1, 1, 40, 41, 41, 41, 41}, 41},
		{"a burst split across two minutes", []uint64{10, 10, 10, 10, 10, 10, 30, 50, 50, 50, 50, 50, 50}, 40},
		{"bursts a minute apart count apart", []uint64{0, 20, 20, 20, 20, 20, 20, 40, 40}, 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := mostInAMinute(tc.counts); got != tc.want {
				t.Errorf("mostInAMinute(%v) = %d, want %d", tc.counts, got, tc.want)
			}
		})
	}
}
