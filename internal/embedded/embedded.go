// Package embedded runs a NATS server with JetStream inside the current process: one
// node for tests and for ratefleet's default run, or a three-node cluster for tests
// that lose a node. It listens on loopback only.
package embedded

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrNotReady is returned when a server does not accept connections in time.
var ErrNotReady = errors.New("embedded NATS server not ready")

// Options configures one embedded server.
type Options struct {
	// Name is the server's name; a random one when empty.
	Name string
	// Host to listen on; 127.0.0.1 when empty.
	Host string
	// Port to listen on; 0 picks a free port.
	Port int
	// StoreDir holds the JetStream file store; a temporary folder, removed on
	// Shutdown, when empty.
	StoreDir string
	// ReadyTimeout bounds the wait for the server to accept connections; 10 s when 0.
	ReadyTimeout time.Duration
	// Log turns the server's own logging on (to stderr).
	Log bool
	// Users, when set, are the only clients the server accepts, each with its
	// permissions; when empty, anyone may connect and do anything.
	Users []User
	// TLS, when set, makes the server speak TLS only.
	TLS *TLS
	// MaxPayload bounds one message; 8 MiB when 0 (a stock server's is 1 MiB).
	MaxPayload int32

	cluster *server.ClusterOpts
	routes  []string
}

// User is one client the server accepts: by password, or by NKey when NKey (the
// public key, U...) is set. Publish and Subscribe are the only subjects it may use.
type User struct {
	Name, Password, NKey string
	Publish, Subscribe   []string
	// Responses lets the user answer each request it receives, once, on its
	// reply subject (the server's allow_responses, with its defaults).
	Responses bool
}

// TLS is the server's TLS setup: its certificate and key, and the authority whose
// client certificates it requires (none required when CA is empty).
type TLS struct {
	Cert, Key, CA string
}

// Server is a running embedded NATS server.
type Server struct {
	ns      *server.Server
	opts    Options
	tempDir string
}

// Start starts a NATS server with JetStream and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	s := &Server{opts: opts}
	if opts.StoreDir == "" {
		dir, err := os.MkdirTemp("", "ratefleet-nats-*")
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: create store folder: %w", err)
		}
		s.tempDir, s.opts.StoreDir = dir, dir
	}
	if err := s.start(); err != nil {
		s.removeTemp()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	o := s.opts
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	sopts := &server.Options{
		ServerName: o.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      !o.Log,
		NoSigs:     true,
		// Test and benchmark loads publish quickly; the defaults are fine for the rest.
		MaxPayload: cmp.Or(o.MaxPayload, 8<<20),
	}
	if err := secure(sopts, o); err != nil {
		return err
	}
	if o.cluster != nil {
		sopts.Cluster = *o.cluster
		sopts.Routes = server.RoutesFromStr(joinRoutes(o.routes))
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return fmt.Errorf("embedded NATS: configure: %w", err)
	}
	if o.Log {
		ns.ConfigureLogger()
	}
	go ns.Start()
	timeout := o.ReadyTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if !ns.ReadyForConnections(timeout) {
		ns.Shutdown()
		return fmt.Errorf("%w after %s (is port %d free?)", ErrNotReady, timeout, port)
	}
	s.ns = ns
	return nil
}

// secure adds o's users and TLS to the server's options.
func secure(sopts *server.Options, o Options) error {
	for _, u := range o.Users {
		perms := &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: u.Publish},
			Subscribe: &server.SubjectPermission{Allow: u.Subscribe},
		}
		if u.Responses {
			perms.Response = &server.ResponsePermission{} // the server fills in its defaults
		}
		if u.NKey != "" {
			sopts.Nkeys = append(sopts.Nkeys, &server.NkeyUser{Nkey: u.NKey, Permissions: perms})
			continue
		}
		sopts.Users = append(sopts.Users, &server.User{Username: u.Name, Password: u.Password, Permissions: perms})
	}
	if o.TLS == nil {
		return nil
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: o.TLS.Cert, KeyFile: o.TLS.Key, CaFile: o.TLS.CA, Verify: o.TLS.CA != ""})
	if err != nil {
		return fmt.Errorf("embedded NATS: TLS: %w", err)
	}
	sopts.TLSConfig, sopts.TLS, sopts.TLSVerify, sopts.TLSTimeout = tc, true, o.TLS.CA != "", 5
	return nil
}

// ClientURL returns the URL clients connect to, such as nats://127.0.0.1:4222.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// StoreDir returns the folder that holds the JetStream store.
func (s *Server) StoreDir() string { return s.opts.StoreDir }

// Shutdown stops the server, waits until it has stopped and removes a temporary
// store folder.
func (s *Server) Shutdown() {
	s.stop()
	s.removeTemp()
}

// Restart stops the server and starts it again with the same options and store,
// as after a crash-free restart. The client URL stays the same.
func (s *Server) Restart() error {
	addr := s.ns.Addr().(*net.TCPAddr)
	s.stop()
	s.opts.Port = addr.Port
	return s.start()
}

func (s *Server) stop() {
	if s.ns == nil {
		return
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

func (s *Server) removeTemp() {
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
		s.tempDir = ""
	}
}

// NATS returns the underlying nats-server, for assertions in tests.
func (s *Server) NATS() *server.Server { return s.ns }

// Cluster is three JetStream servers routed to each other in one process.
type Cluster struct {
	Nodes []*Server
	dir   string
	links *links // nil unless the routes are proxied
}

// ClusterOptions configures a cluster.
type ClusterOptions struct {
	// Users and TLS are those of every node (see Options).
	Users []User
	TLS   *TLS
	// ProxyRoutes runs every route between two nodes through a TCP proxy on
	// loopback, so that a link can be cut, delayed and healed (Cut, Heal, Isolate,
	// Delay, HealAll). Only the routes are proxied: clients keep connecting to the
	// nodes directly, so a node cut off from the others still serves the clients
	// connected to it, and they meet a node without a quorum (JetStream calls time
	// out) rather than a closed connection.
	ProxyRoutes bool
}

// StartCluster starts a three-node JetStream cluster on loopback with fixed ports
// chosen up front, so a node that is stopped can rejoin with StartNode. It returns
// once the cluster has a JetStream meta leader that has heard from every node, so
// that a replicated stream can be created at once.
func StartCluster(name string) (*Cluster, error) { return StartClusterWith(name, ClusterOptions{}) }

// StartClusterWith is StartCluster with the users, TLS and proxied routes of o.
func StartClusterWith(name string, o ClusterOptions) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "ratefleet-cluster-*")
	if err != nil {
		return nil, fmt.Errorf("embedded cluster: create store folder: %w", err)
	}
	c := &Cluster{dir: dir}
	const n = 3
	ports, err := freePorts(2 * n)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	clusterAddrs := make([]string, n)
	for i := range n {
		clusterAddrs[i] = "127.0.0.1:" + strconv.Itoa(ports[n+i])
	}
	routes := func(int) []string {
		urls := make([]string, n)
		for i, a := range clusterAddrs {
			urls[i] = "nats://" + a
		}
		return urls
	}
	if o.ProxyRoutes {
		if c.links, err = startLinks(clusterAddrs); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		routes = func(i int) []string { return c.links.routes(i, n) }
	}
	for i := range n {
		nodeName := fmt.Sprintf("%s-%d", name, i+1)
		co := &server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: ports[n+i]}
		if o.ProxyRoutes {
			co.Advertise = unreachableRoute
		}
		c.Nodes = append(c.Nodes, &Server{opts: Options{
			Name:     nodeName,
			Port:     ports[i],
			StoreDir: fmt.Sprintf("%s/%s", dir, nodeName),
			cluster:  co,
			routes:   routes(i),
			Users:    o.Users,
			TLS:      o.TLS,
		}})
	}
	// Nodes are started together: a node waits for its routes before it is ready.
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- c.StartNode(i) }()
	}
	for range n {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err == nil {
		err = c.waitForPeers(30 * time.Second)
	}
	if err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// StartNode starts (or restarts) node i with its original options.
func (c *Cluster) StartNode(i int) error {
	return c.Nodes[i].start()
}

// StopNode shuts node i down and waits until it has stopped.
func (c *Cluster) StopNode(i int) {
	c.Nodes[i].stop()
}

// ClientURLs returns the client URLs of all nodes, comma-separated, as nats.Connect
// takes them.
func (c *Cluster) ClientURLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = "nats://127.0.0.1:" + strconv.Itoa(n.opts.Port)
	}
	return joinRoutes(urls)
}

// WaitForLeader waits until a running node reports being the JetStream meta leader.
func (c *Cluster) WaitForLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c.MetaLeader() >= 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("embedded cluster: no JetStream leader after %s: %w", timeout, ErrNotReady)
}

// waitForPeers waits until a node is the JetStream meta leader and has heard
// from every node, so that it can place a replicated stream on any three.
func (c *Cluster) waitForPeers(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := c.MetaLeader(); m >= 0 && len(c.Nodes[m].ns.JetStreamClusterPeers()) == len(c.Nodes) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("embedded cluster: no JetStream leader that knows all %d nodes after %s: %w", len(c.Nodes), timeout, ErrNotReady)
}

// MetaLeader returns the index of the running node that is the JetStream meta
// leader, or -1 when none is.
func (c *Cluster) MetaLeader() int {
	for i, n := range c.Nodes {
		if n.ns != nil && n.ns.Running() && n.ns.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// Cut cuts the link between nodes i and j (0-based): their route connections
// close and neither can reach the other until Heal or HealAll.
func (c *Cluster) Cut(i, j int) error {
	if c.links == nil {
		return ErrNoProxies
	}
	return c.links.cut(i, j)
}

// Heal restores the link between nodes i and j: no cut, no delay. The nodes dial
// each other again within a second or so.
func (c *Cluster) Heal(i, j int) error {
	if c.links == nil {
		return ErrNoProxies
	}
	return c.links.heal(i, j)
}

// Isolate cuts every link of node i: a minority of one, still serving the
// clients connected to it.
func (c *Cluster) Isolate(i int) error {
	return c.eachLink(func(a, b int) error {
		if a != i && b != i {
			return nil
		}
		return c.Cut(a, b)
	})
}

// Delay makes every byte between nodes i and j wait d each way (a round trip of
// 2d), in place of any delay the link had; the link stays up.
func (c *Cluster) Delay(i, j int, d time.Duration) error {
	if c.links == nil {
		return ErrNoProxies
	}
	return c.links.delay(i, j, d)
}

// HealAll heals every link.
func (c *Cluster) HealAll() error { return c.eachLink(c.Heal) }

// eachLink calls fn for every pair of nodes a < b, and returns the first error.
func (c *Cluster) eachLink(fn func(a, b int) error) error {
	if c.links == nil {
		return ErrNoProxies
	}
	var first error
	for a := range c.Nodes {
		for b := a + 1; b < len(c.Nodes); b++ {
			if err := fn(a, b); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Shutdown stops every node and its route proxies, and removes the cluster's
// store.
func (c *Cluster) Shutdown() {
	for _, n := range c.Nodes {
		n.stop()
	}
	if c.links != nil {
		c.links.stop()
	}
	_ = os.RemoveAll(c.dir)
}

func joinRoutes(urls []string) string { return strings.Join(urls, ",") }

// freePorts asks the kernel for n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("embedded cluster: find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
