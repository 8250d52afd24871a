package exchange

import (
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A full ledger must be small and cost the garbage collector nothing: the
// simulator keeps a million ids by default, and a collection that has to go
// through them reads the requests that arrive meanwhile late enough to swap two
// of a key's nonces.
func TestIDLedger_AFullLedgerIsSmallAndNotScanned(t *testing.T) {
	const n = 100_000
	l := newIDLedger(n)
	heap, scanned := heapNow(), scannedNow()
	at := time.Unix(1_700_000_000, 0)
	for range n {
		// Each id is its own string, as a request's is.
		l.record(strings.Clone(uuid.New().String()), at)
	}
	perID := float64(heapNow()-heap) / n
	scanPerID := float64(scannedNow()-scanned) / n
	t.Logf("%.0f bytes an id, %.1f of them scanned by a collection", perID, scanPerID)
	assert.Less(t, perID, 80.0, "bytes an id")
	assert.Less(t, scanPerID, 4.0, "bytes scanned an id")

	distinct, dups, untracked := l.totals()
	require.Equal(t, n, distinct)
	assert.Zero(t, dups)
	assert.Zero(t, untracked)
	runtime.KeepAlive(l)
}

// heapNow returns the live heap after a collection.
func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// scannedNow returns the heap bytes the last of two collections scanned.
func scannedNow() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
