package upstream

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConns_ClosesAConnectionIdleTooLong: a connection idle longer than idleFor
// (which a middlebox may have dropped without a word) is closed, not reused.
func TestConns_ClosesAConnectionIdleTooLong(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	for _, tt := range []struct {
		name    string
		idleFor time.Duration
		reused  bool
	}{
		{"idle for less", time.Hour, true},
		{"idle for longer", time.Nanosecond, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newConns(ln.Addr().String(), nil, time.Second, 4)
			p.idleFor = tt.idleFor
			t.Cleanup(p.closeIdle)
			first, err := p.get(context.Background())
			require.NoError(t, err)
			p.put(first)
			time.Sleep(time.Millisecond)
			next, err := p.get(context.Background())
			require.NoError(t, err)
			require.Equal(t, tt.reused, next == first)
			p.put(next)
		})
	}
}
