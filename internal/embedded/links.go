package embedded

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// ErrNoProxies is returned by a cluster's link methods (Cut, Heal, Isolate,
// Delay, HealAll) when it was started without ClusterOptions.ProxyRoutes.
var ErrNoProxies = errors.New("embedded cluster: routes are not proxied (start it with ClusterOptions.ProxyRoutes)")

// links are the TCP proxies on loopback that carry a cluster's routes, one per
// pair of nodes. Node i dials node i+1 through the proxy of their link, and the
// last node dials the first: in a cluster of three every pair is routed once,
// each route solicited by one side only, so a cut link stays cut and a healed
// one is dialed again by its soliciting side within a second.
//
// NATS servers also tell each other about the servers they are routed to, and
// dial the ones they are not routed to yet at the address gossiped (by default
// the cluster port itself): that would route around a cut link. Every node of a
// proxied cluster advertises unreachableRoute instead, so such a dial is refused
// and not retried; the routes through the proxies are the only ones.
//
// A cut proxy closes its connections and stops listening: both nodes see the
// route close at once, and the dialing node is refused until the link heals, as
// behind a firewall that rejects. A delay is a latency toxic on both directions.
type links struct {
	srv     *toxiproxy.ApiServer
	proxies map[[2]int]*toxiproxy.Proxy // by {dialing node, dialed node}
}

// unreachableRoute is the cluster address every node of a proxied cluster
// advertises: a port nothing listens on.
const unreachableRoute = "127.0.0.1:1"

// startLinks starts the proxy of each link of the ring of nodes whose cluster
// ports are clusterAddrs, and returns them.
func startLinks(clusterAddrs []string) (*links, error) {
	l := &links{
		srv:     toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()),
		proxies: map[[2]int]*toxiproxy.Proxy{},
	}
	n := len(clusterAddrs)
	for i := range n {
		j := (i + 1) % n
		p := toxiproxy.NewProxy(l.srv, fmt.Sprintf("route-%d-%d", i+1, j+1), "127.0.0.1:0", clusterAddrs[j])
		if err := l.srv.Collection.Add(p, true); err != nil {
			l.stop()
			return nil, fmt.Errorf("embedded cluster: start the proxy from node %d to node %d: %w", i+1, j+1, err)
		}
		l.proxies[[2]int{i, j}] = p
	}
	return l, nil
}

// routes returns the route URL node i dials: the proxy to the next node.
func (l *links) routes(i, n int) []string {
	return []string{"nats://" + l.proxies[[2]int{i, (i + 1) % n}].Listen}
}

// proxy returns the proxy of the link between i and j.
func (l *links) proxy(i, j int) (*toxiproxy.Proxy, error) {
	if p := l.proxies[[2]int{i, j}]; p != nil {
		return p, nil
	}
	if p := l.proxies[[2]int{j, i}]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("embedded cluster: no link between node %d and node %d", i+1, j+1)
}

func (l *links) cut(i, j int) error {
	p, err := l.proxy(i, j)
	if err != nil {
		return err
	}
	p.Stop()
	return nil
}

// heal removes the link's toxics and starts its proxy again, on the port the
// dialing node dials.
func (l *links) heal(i, j int) error {
	p, err := l.proxy(i, j)
	if err != nil {
		return err
	}
	p.Toxics.ResetToxics(context.Background())
	if err := p.Start(); err != nil && !errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
		return fmt.Errorf("embedded cluster: heal the link between node %d and node %d: %w", i+1, j+1, err)
	}
	return nil
}

// delay makes every byte on the link between i and j wait d, each way, in
// place of any delay it had; the link's connections stay open.
func (l *links) delay(i, j int, d time.Duration) error {
	p, err := l.proxy(i, j)
	if err != nil {
		return err
	}
	p.Toxics.ResetToxics(context.Background())
	for _, dir := range []string{"upstream", "downstream"} {
		spec := fmt.Sprintf(`{"name":"delay-%s","type":"latency","stream":%q,"toxicity":1,"attributes":{"latency":%d}}`,
			dir, dir, d.Milliseconds())
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
			return fmt.Errorf("embedded cluster: delay the link between node %d and node %d: %w", i+1, j+1, err)
		}
	}
	return nil
}

func (l *links) stop() { _ = l.srv.Collection.Clear() }
