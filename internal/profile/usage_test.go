package profile_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
)

// usageRates are two rules: a sliding second and a fixed minute.
const usageRates = "rate:\n  rules:\n    - {limit: 20, window: 1s}\n    - {kind: fixed, limit: 6000, window: 1m}\n  ban_after: 10"

func TestParse_UsageHeadersSayWhatIsWrong(t *testing.T) {
	tests := []struct {
		name, entry string
		field       string // the problem's field, on the entry's line
		want        string
	}{
		{"no header", "{rule: 0, reports: used}", "usage[1]", "needs header, the name of the header that reports the usage"},
		{"header no token", `{header: "X Used", rule: 0, reports: used}`, "usage[1].header", `"X Used" must be a header name, an RFC 7230 token`},
		{"header twice", "{header: x-mbx-used-weight-1s, rule: 1, reports: used}", "usage[1].header", `"x-mbx-used-weight-1s" is read already by usage[0]; a header reports one rule`},
		{"rule out of range", "{header: X-Left, rule: 2, reports: remaining}", "usage[1].rule", "2 is not a rule of rate.rules: give the index of the rule it reports, from 0 to 1"},
		{"negative rule", "{header: X-Left, rule: -1, reports: remaining}", "usage[1].rule", "-1 is not a rule of rate.rules"},
		{"unknown report", "{header: X-Left, rule: 1, reports: left}", "usage[1].reports", `is "left"; use used (the units the key has used in the rule's window) or remaining`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := override(profile.ReferenceYAML, usageRates+"\nusage:\n  - {header: X-MBX-USED-WEIGHT-1S, rule: 0, reports: used}\n  - "+tt.entry)
			_, err := profile.Parse("p.yaml", []byte(doc))
			require.ErrorIs(t, err, profile.ErrInvalid)
			line := 0
			for i, l := range strings.Split(doc, "\n") {
				if strings.Contains(l, tt.entry) {
					line = i + 1
				}
			}
			require.ErrorContains(t, err, fmt.Sprintf("line %d: %s: %s", line, tt.field, tt.want))
			require.Equal(t, 1, strings.Count(err.Error(), "\n  "), "one problem, said once: %v", err)
		})
	}
	t.Run("a fixed second with the default clock offset", func(t *testing.T) {
		doc := override(profile.ReferenceYAML, "rate:\n  rules: [{kind: fixed, limit: 20, window: 1s}]\n  ban_after: 10\nusage:\n  - {header: X-Used, rule: 0, reports: used}")
		_, err := profile.Parse("p.yaml", []byte(doc))
		require.ErrorContains(t, err, "usage[0].rule: 0 is a fixed window of 1s with rate.clock_offset 1s: no count could be placed in one of its intervals; set clock_offset below half the window")
		require.Equal(t, 1, strings.Count(err.Error(), "\n  "), "one problem, said once: %v", err)
		_, err = profile.Parse("p.yaml", []byte(strings.Replace(doc, "ban_after: 10", "ban_after: 10\n  clock_offset: 200ms", 1)))
		require.NoError(t, err)
	})
	t.Run("a bucket", func(t *testing.T) {
		doc := override(profile.ReferenceYAML, "rate:\n  rules: [{kind: bucket, limit: 15, rate: 1}]\n  ban_after: 10\nusage:\n  - {header: X-Left, rule: 0, reports: remaining}")
		_, err := profile.Parse("p.yaml", []byte(doc))
		require.ErrorContains(t, err, "usage[0].rule: 0 is a bucket: its usage is not read; name a sliding or fixed rule")
		require.Equal(t, 1, strings.Count(err.Error(), "\n  "), "one problem, said once: %v", err)
	})
}

// TestReadUsage_UsedAndRemaining: a used header is taken as it is, a remaining
// one as the limit less it; a header absent or not a number says nothing; the
// rules come as LimiterConfig gives them, and are the rules it reports.
func TestReadUsage_UsedAndRemaining(t *testing.T) {
	p, err := profile.Parse("p.yaml", []byte(override(profile.ReferenceYAML, usageRates+`
usage:
  - {header: X-MBX-USED-WEIGHT-1S, rule: 0, reports: used}
  - {header: x-ratelimit-remaining-requests, rule: 1, reports: remaining}`)))
	require.NoError(t, err)
	cfg := p.LimiterConfig(limiter.Config{})
	require.Equal(t, cfg.Rules, cfg.Reported, "both rules are reported")
	_, err = limiter.New(cfg)
	require.NoError(t, err)

	second, minute := cfg.Rules[0], cfg.Rules[1]
	require.Equal(t, limiter.Rule{Kind: limiter.Fixed, Limit: 6000, Window: time.Minute}, minute)
	tests := []struct {
		name   string
		header http.Header
		want   []profile.Usage
	}{
		{"both", http.Header{"X-Mbx-Used-Weight-1s": {"7"}, "X-Ratelimit-Remaining-Requests": {"5990"}},
			[]profile.Usage{{Rule: second, Used: 7}, {Rule: minute, Used: 10}}},
		{"a fraction used counts whole, a fraction left does not", http.Header{"X-Mbx-Used-Weight-1s": {"6.2"}, "X-Ratelimit-Remaining-Requests": {"5989.5"}},
			[]profile.Usage{{Rule: second, Used: 7}, {Rule: minute, Used: 11}}},
		{"more used than the limit", http.Header{"X-Mbx-Used-Weight-1s": {"25"}}, []profile.Usage{{Rule: second, Used: 20}}},
		{"none", http.Header{"Content-Type": {"application/json"}}, nil},
		{"not a number", http.Header{"X-Mbx-Used-Weight-1s": {"many"}, "X-Ratelimit-Remaining-Requests": {"-3"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, p.ReadUsage(tt.header))
		})
	}
	require.Nil(t, profile.Reference().ReadUsage(http.Header{"X-Mbx-Used-Weight-1s": {"7"}}), "no usage section, nothing read")
}
