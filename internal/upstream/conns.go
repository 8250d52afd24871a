package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// conns dials the upstream and keeps its idle connections for the next sends,
// the most recently used first.
type conns struct {
	addr    string      // host:port
	tls     *tls.Config // nil for plain HTTP
	dialer  net.Dialer
	maxIdle int
	idleFor time.Duration // an idle connection older than this is closed, not reused

	mu   sync.Mutex
	idle []*conn
}

// conn is one connection to the upstream, held by one send at a time.
type conn struct {
	net.Conn
	raw  net.Conn // the TCP connection under a TLS one; Conn itself otherwise
	br   *bufio.Reader
	out  bytes.Buffer // the request being sent, in HTTP/1.1 form
	used time.Time    // when it went back to the idle list
}

func newConns(addr string, tlsConf *tls.Config, dialTimeout time.Duration, maxIdle int) *conns {
	return &conns{
		addr:    addr,
		tls:     tlsConf,
		dialer:  net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		maxIdle: maxIdle,
		idleFor: 90 * time.Second,
	}
}

// get returns an idle connection the upstream has not closed, or a new one.
func (p *conns) get(ctx context.Context) (*conn, error) {
	for {
		c := p.pop()
		if c == nil {
			break
		}
		if time.Since(c.used) < p.idleFor && c.br.Buffered() == 0 && open(c.raw) {
			return c, nil
		}
		_ = c.Close()
	}
	raw, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: raw, raw: raw}
	if p.tls != nil {
		tc := tls.Client(raw, p.tls)
		// A handshake takes no longer than a dial may; the send sets its own
		// deadline after.
		if p.dialer.Timeout > 0 {
			_ = raw.SetDeadline(time.Now().Add(p.dialer.Timeout))
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		c.Conn = tc
	}
	c.br = bufio.NewReader(c.Conn)
	return c, nil
}

func (p *conns) pop() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return c
}

// keptRequest is the largest request buffer an idle connection keeps: a larger
// one (a large body) is let go rather than held by every idle connection.
const keptRequest = 64 << 10

// put keeps c for a later send, or closes it when enough are kept.
func (p *conns) put(c *conn) {
	c.used = time.Now()
	if c.out.Cap() > keptRequest {
		c.out = bytes.Buffer{}
	}
	p.mu.Lock()
	if len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// closeIdle closes every idle connection.
func (p *conns) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		_ = c.Close()
	}
}
