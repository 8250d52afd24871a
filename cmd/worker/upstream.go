package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// checkUpstream refuses an --upstream that would send the API keys unencrypted
// over a network: plain http:// to a host that is not loopback, unless allowed.
func checkUpstream(raw string, allowInsecure bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--upstream %q: want a URL such as https://api.example.com", raw)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
	default:
		return fmt.Errorf("--upstream %q: scheme %q: want https:// (or http:// on loopback)", raw, u.Scheme)
	}
	if allowInsecure || isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("--upstream %s: plain http:// to %s would send the API keys unencrypted: use https://, or pass --allow-insecure-upstream if the network is trusted",
		u.Redacted(), u.Hostname())
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
