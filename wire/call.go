package wire

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
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

// Methods returns the methods a call may use.
func Methods() []string {
	return []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
}

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

// ErrPathEscapes is wrapped by Validate's error for a path that could leave the
// profile's base URL (another host, a .. segment, an escaped dot or slash): a
// worker buries such a request as not_allowed, never sends it.
var ErrPathEscapes = errors.New("path leaves the base URL")

// Validate checks that the call can be sent as it is, and only to the upstream.
func (c *Call) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	m := c.GetMethod()
	if !contains(Methods(), m) {
		bad("call method %q: use one of %s", c.Method, strings.Join(Methods(), ", "))
	}
	switch {
	case !strings.HasPrefix(c.Path, "/"):
		bad("call path %q must start with / (it is relative to the profile's base URL)", c.Path)
	case strings.HasPrefix(c.Path, "//"):
		bad("%w: call path %q must not start with // (that names another host)", ErrPathEscapes, c.Path)
	case strings.ContainsAny(c.Path, "?#"):
		bad("call path %q must not hold ? or #: give query parameters in query", c.Path)
	case strings.ContainsFunc(c.Path, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '\\' }):
		bad("call path %q holds a space, control character or backslash", c.Path)
	default:
		if why := checkSegments(c.Path); why != "" {
			bad("%w: call path %q %s", ErrPathEscapes, c.Path, why)
		}
	}
	for _, p := range c.Query {
		if p.Name == "" {
			bad("call query: a parameter has no name")
		}
	}
	for _, h := range c.Header {
		name := textproto.CanonicalMIMEHeaderKey(h.Name)
		switch {
		case !ValidHeaderName(h.Name):
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

// checkSegments returns why path, as the worker sends it, could leave the
// profile's base URL or hide where it goes, or "". The worker joins the path to
// the base URL with url.URL.JoinPath, which decodes it, and an upstream (or a
// proxy before it) may decode it again: so a '.', '/', '\' or '%' written as an
// escape (%2e, %2f, %5c, %25 in either case: %2e%2e, ..%2f, %252e) is refused
// outright, and no segment may be . or .. once decoded.
func checkSegments(path string) string {
	decoded, err := url.PathUnescape(path)
	if err != nil {
		return "holds a % that does not start an escape such as %20"
	}
	lower := strings.ToLower(path)
	for _, esc := range []string{"%2e", "%2f", "%5c", "%25"} {
		if strings.Contains(lower, esc) {
			return "writes a '.', '/', '\\' or '%' as an escape (%2e, %2f, %5c or %25): write a dot as itself; a path may not hide a separator, a . or .. segment, or a second encoding"
		}
	}
	for _, seg := range strings.Split(decoded, "/") {
		if seg == "." || seg == ".." {
			return "must not hold . or .. segments"
		}
	}
	return ""
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

// ValidHeaderName reports whether s is an HTTP token (RFC 7230, RFC 9110), as a
// header name must be: no space, control character (CR, LF), colon or other
// separator.
func ValidHeaderName(s string) bool {
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

// appendJSON appends c as JSON, as encoding/json writes it.
func (c *Call) appendJSON(b []byte) []byte {
	b = append(b, '{')
	if c.Method != "" {
		b = append(b, `"method":`...)
		b = appendString(b, c.Method)
		b = append(b, ',')
	}
	b = append(b, `"path":`...)
	b = appendString(b, c.Path)
	if len(c.Query) > 0 {
		b = append(b, `,"query":`...)
		b = appendParams(b, c.Query)
	}
	if len(c.Header) > 0 {
		b = append(b, `,"header":`...)
		b = appendParams(b, c.Header)
	}
	b = appendField(b, "body", c.Body)
	b = appendField(b, "content_type", c.ContentType)
	return append(b, '}')
}

// appendParams appends ps as a JSON array of {"name","value"} objects.
func appendParams(b []byte, ps []Param) []byte {
	b = append(b, '[')
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, p.Name)
		b = append(b, `,"value":`...)
		b = appendString(b, p.Value)
		b = append(b, '}')
	}
	return append(b, ']')
}
