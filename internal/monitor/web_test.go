package monitor_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/monitor"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// Markup a hostile worker could put in its id (the lease holder) or a key's name.
const (
	holderMarkup = `<b id="injected-holder">x</b><img src=x onerror="document.title='pwned'">`
	keyMarkup    = `<i id="injected-key">k</i>`
)

// hostileSnapshot writes markup into the leases bucket and a worker report and
// returns the monitor's snapshot of them.
func hostileSnapshot(t *testing.T) monitor.Snapshot {
	t.Helper()
	c := connect(t)
	ctx := context.Background()
	kv, err := c.JS.KeyValue(ctx, c.Streams.KV.Leases.Bucket)
	require.NoError(t, err)
	rec, err := json.Marshal(lease.Record{Holder: holderMarkup, Session: "s1", Since: time.Now()})
	require.NoError(t, err)
	_, err = kv.Put(ctx, lease.WorkerEntry("w1"), rec)
	require.NoError(t, err)
	_, err = kv.Put(ctx, lease.KeyEntry("key1"), rec)
	require.NoError(t, err)
	r := stats.NewRecorder("w1", "h", 1, time.Now())
	r.Key("key1", func(k *stats.KeyReport) { k.Sent = 1 })
	r.Key(keyMarkup, func(k *stats.KeyReport) { k.Sent = 2 })
	publishReport(t, c, r, time.Now(), false)

	col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), nil)
	cctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go func() { _ = col.Run(cctx) }()
	var s monitor.Snapshot
	require.Eventually(t, func() bool {
		s = col.Snapshot(ctx)
		holders := map[string]string{}
		for _, k := range s.Keys {
			holders[k.Name] = k.Holder
		}
		_, named := holders[keyMarkup]
		return holders["key1"] == holderMarkup && named
	}, 10*time.Second, 50*time.Millisecond)
	return s
}

func TestWeb_PageNeverParsesDataAsMarkup(t *testing.T) {
	page, err := os.ReadFile("web/index.html")
	require.NoError(t, err)
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		require.NotContains(t, string(page), sink, "the page shows data with textContent only")
	}
}

// dumpDOM loads url in headless Chromium, lets the page run for 2.5 s of
// virtual time, and returns the DOM.
func dumpDOM(t *testing.T, browser, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=2500", "--dump-dom", url).Output()
	require.NoError(t, err)
	return string(out)
}

// TestWeb_StaleBannerWhenThePollFailsOrTheSnapshotIsOld loads the page in
// Chromium against a monitor whose snapshot is fresh, one whose snapshot is a
// minute old (its collector stopped), and one that answers no snapshot: the
// banner is hidden only for the fresh one, and says why otherwise.
func TestWeb_StaleBannerWhenThePollFailsOrTheSnapshotIsOld(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (.ci/run installs Debian's chromium)")
	}
	for _, tc := range []struct {
		name   string
		age    time.Duration
		noSnap bool
		want   string
	}{
		{"fresh", time.Second, false, `<div id="stale" role="alert" hidden="">`},
		{"a minute old", time.Minute, false, "STALE DATA: the latest snapshot is 60 s old"},
		{"poll fails", 0, true, "STALE DATA: the last poll failed (the monitor answered 503)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := monitor.NewMetrics()
			s := sample()
			m.Now = func() time.Time { return s.At.Add(tc.age) }
			if !tc.noSnap {
				m.Set(s)
			}
			srv := httptest.NewServer(m.WebHandler(nil))
			t.Cleanup(srv.Close)
			dom := dumpDOM(t, browser, srv.URL+"/")
			require.Contains(t, dom, tc.want)
			if !tc.noSnap {
				require.Contains(t, dom, "<td>key22</td>", "the data is still shown under the banner")
			}
		})
	}
}

func TestWeb_MarkupInHolderAndKeyNameShownAsText(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (.ci/run installs Debian's chromium)")
	}
	m := monitor.NewMetrics()
	m.Set(hostileSnapshot(t))
	srv := httptest.NewServer(m.WebHandler(nil))
	t.Cleanup(srv.Close)

	dom := dumpDOM(t, browser, srv.URL+"/")
	require.Contains(t, dom, "<td>key1</td>", "the key table is filled")
	require.Contains(t, dom, `&lt;b id="injected-holder"&gt;x&lt;/b&gt;`, "the holder is shown as text")
	require.Contains(t, dom, `&lt;i id="injected-key"&gt;k&lt;/i&gt;`, "the key name is shown as text")
	require.NotContains(t, dom, `<b id="injected-holder">`, "no element was made from the holder")
	require.NotContains(t, dom, `<i id="injected-key">`, "no element was made from the key name")
	require.False(t, strings.Contains(dom, "<title>pwned</title>"), "no script ran")
}
