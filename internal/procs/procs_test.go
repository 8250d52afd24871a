package procs

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTuner_FollowsCPUUse(t *testing.T) {
	cfg := Config{Max: 4, Up: 0.7, Down: 0.5, DownAfter: 3}
	// Each reading is the cores used over one second.
	tests := []struct {
		name  string
		cores []float64
		want  []int
	}{
		{"starts at the most", nil, nil},
		{"idle, it gives one back every DownAfter readings", []float64{0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1},
			[]int{4, 4, 3, 3, 3, 2, 2, 2, 1, 1}},
		{"a reading at or over the line starts the count again", []float64{0.1, 0.1, 1.5, 0.1, 0.1, 0.1},
			[]int{4, 4, 4, 4, 4, 3}},
		{"half a core stays on two, under it goes to one", []float64{0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.49, 0.49, 0.49},
			[]int{4, 4, 3, 3, 3, 2, 2, 2, 2, 2, 2, 1}},
		{"busy one gets a second at once, and more as it fills them", []float64{0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.75, 1.5, 2.5, 3.9},
			[]int{4, 4, 3, 3, 3, 2, 2, 2, 1, 2, 3, 4, 4}},
		{"between the lines it stays", []float64{0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.75, 0.6, 0.6, 0.6, 0.6},
			[]int{4, 4, 3, 3, 3, 2, 2, 2, 1, 2, 2, 2, 2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tu := NewTuner(cfg)
			require.Equal(t, 4, tu.Procs())
			var got []int
			for _, c := range tt.cores {
				got = append(got, tu.Next(time.Duration(c*float64(time.Second)), time.Second))
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestTuner_ReadsUseOverTheSpanGiven(t *testing.T) {
	tu := NewTuner(Config{Max: 2, DownAfter: 1})
	// 0.3 s of CPU in 0.5 s is 0.6 of a core: not under Down (0.5) of one.
	assert.Equal(t, 2, tu.Next(300*time.Millisecond, 500*time.Millisecond))
	// 0.3 s in 2 s is 0.15 of a core.
	assert.Equal(t, 1, tu.Next(300*time.Millisecond, 2*time.Second))
	// 0.8 s in 1 s is over Up (0.7) of one.
	assert.Equal(t, 2, tu.Next(800*time.Millisecond, time.Second))
	assert.Equal(t, 2, tu.Next(time.Second, 0), "no time passed: nothing to read")
}

func TestAuto_LeavesAFixedSettingAlone(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvVar {
				return v
			}
			return ""
		}
	}
	assert.False(t, Auto(env("2")))
	_, readable := cpuTime()
	assert.Equal(t, readable, Auto(env("")))
}

func TestRun_TunesAnIdleProcessDownAndPutsBackItsProcessors(t *testing.T) {
	if _, ok := cpuTime(); !ok {
		t.Skip("the process's CPU time is not read here")
	}
	start := runtime.GOMAXPROCS(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Max: start + 1, Interval: 20 * time.Millisecond, DownAfter: 1})
	}()
	// This test process is idle: a few readings take it down to one processor.
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	<-done
	assert.Equal(t, start, runtime.GOMAXPROCS(0))
}
