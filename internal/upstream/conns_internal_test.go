package upstream

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// listen accepts connections on loopback and holds them open until the test
// ends; it returns the address.
func listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu       sync.Mutex
		accepted []net.Conn
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range accepted {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// TestConns_ClosesAConnectionIdleTooLong: a connection idle longer than idleFor
// (which a middlebox may have dropped without a word) is closed, not reused.
func TestConns_ClosesAConnectionIdleTooLong(t *testing.T) {
	addr := listen(t)
	for _, tt := range []struct {
		name    string
		idleFor time.Duration
		reused  bool
	}{
		{"idle for less", time.Hour, true},
		{"idle for longer", time.Nanosecond, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newConns(addr, nil, time.Second, 4)
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

// TestClient_SendsOverTLSAndKeepsTheConnection: an https upstream is reached over
// TLS, and one connection (one handshake) carries request after request.
func TestClient_SendsOverTLSAndKeepsTheConnection(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.NotNil(t, r.TLS)
		_, _ = io.WriteString(w, `{"status":"OK"}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, 2*time.Second, 4, nil)
	require.NoError(t, err)
	t.Cleanup(c.Close)

	a := c.Send(context.Background(), Call{Secret: "k", Nonce: 1, RequestID: "r"})
	require.Equal(t, ConnError, a.Class, "the test server's certificate is not trusted yet")
	require.False(t, a.Unknown(), "nothing left before the handshake failed")

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c.conns.tls.RootCAs = roots
	for i := range 3 {
		a := c.Send(context.Background(), Call{Secret: "k", Nonce: int64(i + 2), RequestID: "r"})
		require.Equal(t, OK, a.Class, "send %d: %s", i, a.Msg)
	}
	require.EqualValues(t, 2, conns.Load(), "the refused handshake, then one connection")
}

// TestConns_AnIdleConnectionLetsALargeRequestsBufferGo: memory held by idle
// connections stays bounded whatever size of request went out on them.
func TestConns_AnIdleConnectionLetsALargeRequestsBufferGo(t *testing.T) {
	addr := listen(t)
	p := newConns(addr, nil, time.Second, 4)
	t.Cleanup(p.closeIdle)
	for _, size := range []int{1 << 10, 1 << 20} {
		c, err := p.get(context.Background())
		require.NoError(t, err)
		c.out.Grow(size)
		p.put(c)
		require.LessOrEqual(t, c.out.Cap(), keptRequest, "after a request of %d bytes", size)
	}
}
