package wire

import (
	"encoding/base64"
	"strings"
)

// Token encodes a request id as one NATS subject token (unpadded base64url), so
// that any id, dots and spaces included, names exactly one subject.
func Token(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

// ResultSubject returns the results subject of request id, under prefix (the
// results stream's subject without its final wildcard, "ratefleet.results.").
func ResultSubject(prefix, id string) string {
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	return prefix + Token(id)
}
