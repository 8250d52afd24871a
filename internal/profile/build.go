package profile

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/wire"
)

// Creds is what Build needs of a key. Secret and Passphrase stay in the worker's
// process: only a signature made with them, and a passphrase the profile places,
// leave it.
type Creds struct {
	// APIKey is what the upstream is sent as the key (keys.Key.APIKey).
	APIKey     string
	Secret     string
	Passphrase string
}

// Send is one send's variable parts.
type Send struct {
	Nonce     int64
	RequestID string
	Now       time.Time
}

// Built is the HTTP request to send, relative to nothing: URL is complete.
type Built struct {
	Method string
	URL    *url.URL
	Header http.Header
	Body   string
}

// Build makes the HTTP request of call (the default call when nil) for the key
// and the send: it places the key, the nonce, the timestamp, the request id and
// the passphrase where the profile says, then signs. It fails, wrapping ErrCall,
// for a call the profile cannot make.
func (p *Profile) Build(call *wire.Call, c Creds, s Send) (Built, error) {
	if call == nil {
		call = &p.DefaultCall
	}
	if err := p.CheckCall(call); err != nil {
		return Built{}, err
	}
	base, err := url.Parse(p.BaseURL)
	if err != nil {
		return Built{}, fmt.Errorf("%w: base_url: %v", ErrCall, err)
	}
	u := base.JoinPath(call.Path)
	if !strings.HasPrefix(u.Path, "/") {
		u.Path, u.RawPath = "/"+u.Path, ""
	}
	b := Built{Method: call.GetMethod(), URL: u, Header: http.Header{}}

	query := make([]string, 0, len(call.Query)+4)
	for _, q := range call.Query {
		query = append(query, url.QueryEscape(q.Name)+"="+url.QueryEscape(q.Value))
	}
	var form []string // fields the profile adds to a form body, before the call's own
	for _, h := range call.Header {
		b.Header.Add(h.Name, h.Value)
	}
	put := func(pl Place, value string) {
		switch pl.In {
		case InQuery:
			query = append(query, url.QueryEscape(pl.Name)+"="+url.QueryEscape(value))
		case InHeader:
			b.Header.Set(pl.Name, value)
		case InBearer:
			b.Header.Set("Authorization", "Bearer "+value)
		case InForm:
			form = append(form, url.QueryEscape(pl.Name)+"="+url.QueryEscape(value))
		}
	}
	pt := parts{method: b.Method, passphrase: c.Passphrase}
	if p.Nonce != nil {
		pt.nonce = strconv.FormatInt(s.Nonce, 10)
		put(p.Nonce.Place, pt.nonce)
	}
	if p.Timestamp != nil {
		ts := s.Now.UnixMilli()
		if p.Timestamp.Unit == "s" {
			ts = s.Now.Unix()
		}
		pt.timestamp = strconv.FormatInt(ts, 10)
		put(p.Timestamp.Place, pt.timestamp)
	}
	put(p.Key, c.APIKey)
	if p.Passphrase != nil {
		put(*p.Passphrase, c.Passphrase)
	}
	if p.RequestID != nil {
		put(*p.RequestID, s.RequestID)
	}

	b.Body = call.Body
	ct := call.ContentType
	if len(form) > 0 {
		if b.Method == http.MethodGet {
			return Built{}, fmt.Errorf("%w: the profile puts fields in a form body, which a GET does not have: use POST", ErrCall)
		}
		// The profile's fields go first: Kraken signs "nonce=…&…" in that order.
		b.Body = strings.Join(append(form, nonEmpty(call.Body)...), "&")
		if ct == "" {
			ct = "application/x-www-form-urlencoded"
		}
	}
	if b.Body != "" {
		if ct == "" {
			ct = "application/x-www-form-urlencoded"
		}
		b.Header.Set("Content-Type", ct)
	}

	u.RawQuery = strings.Join(query, "&")
	if p.Sign != nil {
		pt.path, pt.query, pt.body = u.EscapedPath(), u.RawQuery, b.Body
		sig, err := p.Sign.signature(c.Secret, pt)
		if err != nil {
			return Built{}, fmt.Errorf("%w: sign: %v", ErrCall, err)
		}
		switch p.Sign.In {
		case InHeader:
			b.Header.Set(p.Sign.Name, sig)
		case InQuery:
			q := url.QueryEscape(p.Sign.Name) + "=" + url.QueryEscape(sig)
			if u.RawQuery == "" {
				u.RawQuery = q
			} else {
				u.RawQuery += "&" + q
			}
		}
	}
	return b, nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
