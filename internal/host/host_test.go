package host

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		name        string
		data        string
		busy, total uint64
	}{
		{name: "every field", data: "cpu  10 1 5 80 4 0 0 0 0 0\ncpu0 5 0 2 40 2 0 0 0 0 0\n", busy: 16, total: 100},
		{name: "the four oldest fields and iowait", data: "cpu 3 0 2 15 5\n", busy: 5, total: 25},
		{name: "a core's line first is not the machine's", data: "cpu0 5 0 2 40 2\n", busy: 0, total: 0},
		{name: "too few fields", data: "cpu 1 2 3\n", busy: 0, total: 0},
		{name: "not a number", data: "cpu 1 2 x 4 5\n", busy: 0, total: 0},
		{name: "empty", data: "", busy: 0, total: 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			busy, total := ParseStat([]byte(c.data))
			assert.Equal(t, c.busy, busy, "busy")
			assert.Equal(t, c.total, total, "total")
		})
	}
}

func TestWatch_TellsEachReadingOfABusySpan(t *testing.T) {
	// Each reading adds 100 ticks in all, busy as the table says.
	var busy, total uint64
	shares := []uint64{10, 49, 50, 90, 0, 100}
	next := 0
	at := time.Unix(1000, 0)
	var told []time.Time
	w := Watch{
		Share: 0.5,
		Read:  func() (uint64, uint64) { return busy, total },
		Now:   func() time.Time { return at },
		Busy:  func(t time.Time) { told = append(told, t) },
	}
	b0, t0 := w.Read()
	var want []time.Time
	for next < len(shares) {
		busy += shares[next]
		total += 100
		at = at.Add(250 * time.Millisecond)
		if shares[next] >= 50 {
			want = append(want, at)
		}
		next++
		b0, t0 = w.step(b0, t0)
	}
	assert.Equal(t, want, told)

	// No tick since the reading before, or counters reset: nothing told.
	told = nil
	b0, t0 = w.step(b0, t0)
	busy, total = 0, 0
	w.step(b0, t0)
	assert.Empty(t, told)
}

func TestWatch_RunReturnsAtOnceWithoutCounters(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch{Share: 0.5, Read: func() (uint64, uint64) { return 0, 0 }, Busy: func(time.Time) { t.Error("told busy") }}.Run(context.Background())
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept reading a machine with no counters")
	}
}

func TestWatch_RunReadsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var busy, total uint64
	told := make(chan time.Time, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch{Share: 0.5, Every: time.Millisecond,
			Read: func() (uint64, uint64) { busy += 60; total += 100; return busy, total },
			Busy: func(at time.Time) {
				select {
				case told <- at:
				default:
				}
			}}.Run(ctx)
	}()
	<-told
	cancel()
	<-done
}
