// Package ratefleet holds the project's default NATS declarations. The programs live
// in cmd/ and their substance in internal/.
package ratefleet

import _ "embed"

//go:embed streams.yaml
var streamsYAML []byte

// DefaultStreams returns the contents of the streams.yaml shipped with ratefleet,
// used by every command unless --streams names another file.
func DefaultStreams() []byte {
	return append([]byte(nil), streamsYAML...)
}
