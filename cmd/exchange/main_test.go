package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/exchange"
)

// started runs the program with args on a free port and returns its base URL; the
// program stops, and must return nil, when the test ends.
func started(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), w, io.Discard)
		w.CloseWithError(errors.New("run returned"))
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("run did not return after its context was canceled")
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "the base URL on stdout")
	go io.Copy(io.Discard, out)
	return strings.TrimSpace(line)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestRun_ServesTheReferenceExchangeByDefault(t *testing.T) {
	base := started(t)
	k := exchange.DefaultKeys()[0].Secret()
	status, body := get(t, base+"/api/request?api_key="+k+"&nonce=1&req_id=r1")
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, `{"status":"OK","req_id":"r1"}`, body)

	var st exchange.Stats
	_, body = get(t, base+"/stats")
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	assert.Equal(t, 20, st.Limit)
	assert.Equal(t, int64(1000), st.WindowMS)
	assert.Equal(t, 10, st.BlockAfter)
	assert.Len(t, st.Keys, 5)
	assert.Equal(t, uint64(1), st.Keys[0].OK)
}

func TestRun_FlagsSetTheRules(t *testing.T) {
	base := started(t, "--keys", "alpha=S1,S2", "--limit", "1", "--window", "1h",
		"--min-delay", "0ms", "--max-delay", "0ms", "--block-after", "1", "--seed", "5")
	status, _ := get(t, base+"/api/request?api_key=S1&nonce=1")
	assert.Equal(t, http.StatusOK, status)
	status, body := get(t, base+"/api/request?api_key=S1&nonce=2")
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Contains(t, body, "exceeded rate limit")
	_, body = get(t, base+"/api/request?api_key=S1&nonce=3")
	assert.Contains(t, body, "blocked", "blocked after one rejection")
	status, _ = get(t, base+"/api/request?api_key="+exchange.DefaultKeys()[0].Secret()+"&nonce=1")
	assert.Equal(t, http.StatusUnauthorized, status, "--keys replaces the reference's keys")

	var st exchange.Stats
	_, body = get(t, base+"/stats")
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.Len(t, st.Keys, 2)
	assert.Equal(t, "alpha", st.Keys[0].Name)
	assert.Equal(t, "key2", st.Keys[1].Name)
	assert.NotContains(t, body, "S1")
}

func TestRun_FaultFlagsAreInForceAtStart(t *testing.T) {
	base := started(t, "--error-rate", "1", "--error-status", "500", "--max-delay", "0ms")
	status, body := get(t, base+"/api/request?api_key="+exchange.DefaultKeys()[0].Secret()+"&nonce=1")
	assert.Equal(t, http.StatusInternalServerError, status)
	assert.Equal(t, `{"status":"error","error_msg":"injected fault"}`, body)
}

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(keysFile, []byte("# fleet keys\nmain=AAA\nBBB\n"), 0o600))
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, o options)
	}{
		{"defaults are the reference", nil, func(t *testing.T, o options) {
			def := exchange.DefaultConfig()
			assert.Equal(t, "127.0.0.1:8080", o.listen)
			assert.Equal(t, def.Keys, o.cfg.Keys)
			assert.Equal(t, def.Limit, o.cfg.Limit)
			assert.Equal(t, def.Window, o.cfg.Window)
			assert.Equal(t, def.InDelay, o.cfg.InDelay)
			assert.Equal(t, def.OutDelay, o.cfg.OutDelay)
			assert.Equal(t, def.BlockAfter, o.cfg.BlockAfter)
			assert.Equal(t, exchange.Faults{ErrorStatus: 503}, o.cfg.Faults)
		}},
		{"both delays", []string{"--min-delay", "5ms", "--max-delay", "9ms"}, func(t *testing.T, o options) {
			assert.Equal(t, exchange.DelayRange{Min: 5 * ms, Max: 9 * ms}, o.cfg.InDelay)
			assert.Equal(t, exchange.DelayRange{Min: 5 * ms, Max: 9 * ms}, o.cfg.OutDelay)
		}},
		{"one way's delays", []string{"--in-min-delay", "300ms", "--in-max-delay", "300ms", "--out-max-delay", "0s"}, func(t *testing.T, o options) {
			assert.Equal(t, exchange.DelayRange{Min: 300 * ms, Max: 300 * ms}, o.cfg.InDelay)
			assert.Equal(t, exchange.DelayRange{}, o.cfg.OutDelay)
		}},
		{"keys file", []string{"--keys-file", keysFile}, func(t *testing.T, o options) {
			require.Len(t, o.cfg.Keys, 2)
			assert.Equal(t, "main", o.cfg.Keys[0].Name())
			assert.Equal(t, "AAA", o.cfg.Keys[0].Secret())
			assert.Equal(t, "key2", o.cfg.Keys[1].Name())
		}},
		{"faults", []string{"--error-rate", "0.2", "--error-after", "--extra-delay", "1s", "--down-for", "2s", "--down-drop"}, func(t *testing.T, o options) {
			assert.Equal(t, exchange.Faults{ErrorRate: 0.2, ErrorStatus: 503, ErrorAfter: true,
				ExtraDelay: time.Second, DownFor: 2 * time.Second, DownDrop: true}, o.cfg.Faults)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard, io.Discard)
			require.NoError(t, err)
			tc.check(t, o)
		})
	}
}

func TestRun_ExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"help", []string{"--help"}, 0, "GET  /api/request"},
		{"bad value", []string{"--limit", "x"}, 2, `invalid value "x" for flag -limit`},
		{"unknown flag", []string{"--nope"}, 2, "flag provided but not defined: -nope"},
		{"argument", []string{"serve"}, 2, `unexpected argument "serve"`},
		{"both key sources", []string{"--keys", "A", "--keys-file", "f"}, 2, "not both"},
		{"missing keys file", []string{"--keys-file", "/no/such/file"}, 2, "--keys-file: read API keys"},
		{"bad config", []string{"--limit", "0"}, 1, "exchange: invalid config: Limit 0 must be at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			err := run(context.Background(), tc.args, &stderr, &stderr)
			assert.Equal(t, tc.code, cli.ExitCode("exchange", err, &stderr))
			assert.Contains(t, stderr.String(), tc.stderr)
		})
	}
	assert.True(t, errors.Is(run(context.Background(), []string{"-h"}, io.Discard, io.Discard), flag.ErrHelp))
}

func TestRun_BusyPortFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	err = run(context.Background(), []string{"--listen", ln.Addr().String()}, io.Discard, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "listen on "+ln.Addr().String())
	assert.Equal(t, 1, cli.ExitCode("exchange", err, io.Discard))
}

func TestParseFlags_RefusesAKeysFileOthersMayRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(path, []byte("main=S3CR3T\n"), 0o600))
	require.NoError(t, os.Chmod(path, 0o640))
	_, err := parseFlags([]string{"--keys-file", path}, io.Discard, io.Discard)
	require.ErrorIs(t, err, cli.ErrFileMode)
	assert.Contains(t, err.Error(), "chmod 600 "+path)

	var stderr strings.Builder
	o, err := parseFlags([]string{"--keys-file", path, "--insecure-file-mode"}, io.Discard, &stderr)
	require.NoError(t, err)
	assert.Equal(t, "S3CR3T", o.cfg.Keys[0].Secret())
	assert.Contains(t, stderr.String(), "chmod 600")
}
