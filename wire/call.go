package wire

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxBodyBytes bounds a call's body.
const MaxBodyBytes = 512 << 10

// Call is the HTTP call a request makes upstream, relative to the upstream
// profile's base URL. The worker adds what the profile says (the key, the nonce,
// the request id, the signature); those names are reserved and refused here when
// the profile is known (profile.Profile.CheckCall).
type Call struct {
	// Method is GET, POST, PUT, PATCH or DELETE; GET when empty.
	Method string `json:"method,omitempty"`
	// Path is the path under the base URL, starting with "/", without a query.
	Path string `json:"path"`
	// Query holds the query parameters, in the order given.
	Query []Param `json:"query,omitempty"`
	// Header holds extra request headers.
	Header []Param `json:"header,omitempty"`
	// Body is the request body, sent as given.
	Body string `json:"body,omitempty"`
	// ContentType is the body's media type; application/x-www-form-urlencoded
	// when a body is given without one.
	ContentType string `json:"content_type,omitempty"`
}

// Param is one name and value, of a query or of a header.
type Param struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Methods a call may use.
var methods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// Headers a call may not set: the transport's, and those that would let a
// request change where or how it is sent.
var forbiddenHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Upgrade": true, "Te": true, "Trailer": true, "Keep-Alive": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Expect": true, "Content-Type": true,
}

// GetMethod returns the call's method, GET when empty.
func (c *Call) GetMethod() string {
	if c.Method == "" {
		return http.MethodGet
	}
	return c.Method
}

// Validate checks that the call can be sent as it is, and only to the upstream.
func (c *Call) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	m := c.GetMethod()
	if !contains(methods, m) {
		bad("call method %q: use one of %s", c.Method, strings.Join(methods, ", "))
	}
	switch {
	case !strings.HasPrefix(c.Path, "/"):
		bad("call path %q must start with / (it is relative to the profile's base URL)", c.Path)
	case strings.HasPrefix(c.Path, "//"):
		bad("call path %q must not start with // (that names another host)", c.Path)
	case strings.ContainsAny(c.Path, "?#"):
		bad("call path %q must not hold ? or #: give query parameters in query", c.Path)
	case strings.ContainsFunc(c.Path, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '\\' }):
		bad("call path %q holds a space, control character or backslash", c.Path)
	case contains(strings.Split(c.Path, "/"), ".."), contains(strings.Split(c.Path, "/"), "."):
		bad("call path %q must not hold . or .. segments", c.Path)
	}
	for _, p := range c.Query {
		if p.Name == "" {
			bad("call query: a parameter has no name")
		}
	}
	for _, h := range c.Header {
		name := textproto.CanonicalMIMEHeaderKey(h.Name)
		switch {
		case !validToken(h.Name):
			bad("call header %q is not a valid header name", h.Name)
		case forbiddenHeaders[name]:
			bad("call header %q may not be set by a request (give content_type for Content-Type)", h.Name)
		case !validValue(h.Value):
			bad("call header %q has a value with control characters", h.Name)
		}
	}
	if len(c.Body) > MaxBodyBytes {
		bad("call body of %d bytes: at most %d", len(c.Body), MaxBodyBytes)
	}
	if c.Body != "" && m == http.MethodGet {
		bad("call body on a GET: use POST, PUT or PATCH, or put the parameters in query")
	}
	if c.ContentType != "" && !validValue(c.ContentType) {
		bad("call content_type %q has control characters", c.ContentType)
	}
	return errors.Join(errs...)
}

// ValidSubject checks that s is a NATS subject a result may be published to:
// dot-separated tokens of printable characters, without wildcards.
func ValidSubject(s string) error {
	if s == "" || !utf8.ValidString(s) {
		return errors.New("empty or not UTF-8")
	}
	for _, tok := range strings.Split(s, ".") {
		switch {
		case tok == "":
			return fmt.Errorf("subject %q has an empty token", s)
		case tok == "*" || tok == ">":
			return fmt.Errorf("subject %q holds a wildcard", s)
		case strings.ContainsFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			return fmt.Errorf("subject %q holds a space or control character", s)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// validToken reports whether s is an HTTP token (RFC 9110), as a header name must be.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// validValue reports whether s may be a header value: no control characters
// other than tab.
func validValue(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f })
}
