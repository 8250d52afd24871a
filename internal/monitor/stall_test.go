package monitor

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Edge 2: the monitor says why the queue is not moving.
func TestStalled_SaysWhyTheQueueIsNotMoving(t *testing.T) {
	held := Key{Name: "key1", Holder: "w1"}
	quarantined := Key{Name: "key1", Unusable: true, Quarantined: true}
	refused := Key{Name: "key2", Unusable: true}
	free := Key{Name: "key3"}
	standby := Worker{ID: "w1", State: "standby"}
	tests := []struct {
		name    string
		waiting uint64
		keys    []Key
		workers []Worker
		want    string
	}{
		{"moving", 10, []Key{held, free}, []Worker{{ID: "w1", State: "active"}}, ""},
		{"nothing waits", 0, []Key{quarantined, refused}, nil, ""},
		{"every key unusable", 10, []Key{quarantined, refused}, []Worker{standby}, "every key is unusable (1 quarantined by the ban guard, 1 refused"},
		{"no worker", 10, []Key{free}, []Worker{{ID: "w1", State: "stopped"}}, "no worker is running"},
		{"no holder", 10, []Key{refused, free}, []Worker{standby}, "no worker holds a key (1 workers running, 1 of 2 keys unusable)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := stalled(Snapshot{Queue: Queue{Waiting: tt.waiting}, Keys: tt.keys, Workers: tt.workers})
			if tt.want == "" {
				require.Empty(t, got)
				return
			}
			require.True(t, strings.HasPrefix(got, tt.want), got)
		})
	}
}
