package fleet

import (
	"encoding/binary"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestStatCPU_SumsUserAndSystemTicks(t *testing.T) {
	// Fields after the name: state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime ...
	const tail = " S 1 2 3 0 -1 4194560 100 0 0 0 250 75 9 9 20 0 8 0\n"
	tests := []struct {
		name  string
		stat  string
		ticks int64
		want  time.Duration
	}{
		{"plain name, USER_HZ", "42 (worker)" + tail, 100, 3250 * time.Millisecond},
		{"name with spaces and parentheses", "42 (a (b) c)" + tail, 100, 3250 * time.Millisecond},
		{"another tick rate", "42 (worker)" + tail, 1000, 325 * time.Millisecond},
		{"children's time not counted", "42 (x) S 1 2 3 0 -1 0 0 0 0 0 0 0 500 500 20 0 8 0", 100, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := StatCPU([]byte(tc.stat), tc.ticks)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("StatCPU = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestStatCPU_RejectsWhatIsNotAStatLine(t *testing.T) {
	for _, stat := range []string{"", "42 worker S 1", "42 (worker) S 1 2 3", "42 (w) S 1 2 3 0 -1 0 0 0 0 0 x 1 0 0"} {
		if _, err := StatCPU([]byte(stat), 100); err == nil {
			t.Errorf("StatCPU(%q): no error", stat)
		}
	}
}

func TestStatusPeakRSS(t *testing.T) {
	tests := []struct {
		name, status string
		want         int64
		ok           bool
	}{
		{"a process's status", "Name:\tworker\nVmPeak:\t 1266048 kB\nVmHWM:\t   58196 kB\nVmRSS:\t   57000 kB\n", 58196 << 10, true},
		{"the last line, no newline", "Name:\tw\nVmHWM:\t12 kB", 12 << 10, true},
		{"a kernel thread has none", "Name:\tkworker\nState:\tI (idle)\n", 0, false},
		{"not kB", "VmHWM:\t12 MB\n", 0, false},
		{"not a number", "VmHWM:\tx kB\n", 0, false},
		{"empty", "", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := StatusPeakRSS([]byte(tc.status))
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("StatusPeakRSS = %d, %v; want %d, ok %v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestProc_PeakRSSOfARunningProcess(t *testing.T) {
	p, err := Start("sleep", "sleep", []string{"5"}, nil, io.Discard, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop(time.Second) }()
	if got := p.PeakRSS(); got <= 0 || got > 1<<30 {
		t.Errorf("PeakRSS of a running sleep = %d bytes, want some, under 1 GiB", got)
	}
}

func TestAuxvValue_FindsTheTag(t *testing.T) {
	word := strconv.IntSize / 8
	vec := func(pairs ...uint64) []byte {
		b := make([]byte, len(pairs)*word)
		for i, v := range pairs {
			if word == 4 {
				binary.NativeEndian.PutUint32(b[i*word:], uint32(v))
			} else {
				binary.NativeEndian.PutUint64(b[i*word:], v)
			}
		}
		return b
	}
	tests := []struct {
		name string
		auxv []byte
		want uint64
	}{
		{"among others", vec(6, 4096, atClockTick, 250, 0, 0), 250},
		{"absent", vec(6, 4096, 0, 0), 0},
		{"after the end marker", vec(6, 4096, 0, 0, atClockTick, 250), 0},
		{"truncated", vec(6, 4096, atClockTick)[:3*word], 0},
		{"empty", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := auxvValue(tc.auxv, atClockTick); got != tc.want {
				t.Errorf("auxvValue = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestClockTicks_IsUserHZOnLinux(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/self/auxv is Linux's")
	}
	if _, err := os.Stat("/proc/self/auxv"); err != nil {
		t.Skip(err)
	}
	if got := ClockTicks(); got != userHZ {
		t.Errorf("ClockTicks = %d, want %d", got, userHZ)
	}
}

func TestProcCPU_ReadsThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip(err)
	}
	// Spin until /proc says this process has used 20 ms: a reading stuck at 0
	// (a wrong field, a wrong unit) fails.
	deadline := time.Now().Add(5 * time.Second)
	for SelfCPU() < 20*time.Millisecond && time.Now().Before(deadline) {
		for i := 0; i < 1e6; i++ {
			_ = strconv.Itoa(i)
		}
	}
	if got := SelfCPU(); got < 20*time.Millisecond {
		t.Errorf("SelfCPU = %s after spinning, want at least 20ms", got)
	}
}

func TestShareCores_GivesEachProcessItsShare(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		cpus    int
		environ []string
		want    []string
	}{
		{"two cores, five processes", Config{Workers: 1, Monitor: true}, 2, nil, []string{"GOMAXPROCS=1"}},
		{"sixteen cores, five processes", Config{Workers: 1, Monitor: true}, 16, nil, []string{"GOMAXPROCS=3"}},
		{"sixteen cores, eight workers", Config{Workers: 8}, 16, nil, []string{"GOMAXPROCS=1"}},
		{"more cores than processes", Config{Workers: 2}, 64, nil, []string{"GOMAXPROCS=12"}},
		{"set in the environment", Config{Workers: 2}, 2, []string{"HOME=/", "GOMAXPROCS=2"}, nil},
		{"set in Env", Config{Workers: 2, Env: []string{"GOMAXPROCS=2"}}, 2, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := shareCores(tt.cfg, tt.cpus, tt.environ)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("shareCores = %q, want %q", got, tt.want)
			}
		})
	}
}
