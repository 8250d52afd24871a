package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartCPUProfile_WritesAProfileOrSaysWhyNot(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, dir string
		want      string // file written, "" for none
		stderr    string
	}{
		{name: "unset", dir: ""},
		{name: "a folder", dir: dir, want: fmt.Sprintf("fleet-delays-%d.pprof", os.Getpid())},
		{name: "no such folder", dir: filepath.Join(dir, "missing"), stderr: "fleet delays: no CPU profile: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stderr strings.Builder
			stop := startCPUProfile(c.dir, "fleet delays", &stderr)
			stop()
			if c.stderr != "" {
				assert.Contains(t, stderr.String(), c.stderr)
			} else {
				assert.Empty(t, stderr.String())
			}
			if c.want != "" {
				info, err := os.Stat(filepath.Join(c.dir, c.want))
				require.NoError(t, err)
				assert.Positive(t, info.Size(), "a profile, even of an idle moment, has a header")
			}
		})
	}
}

func TestSetGCPercent_UnlessGOGCIsSet(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	cases := []struct {
		gogc string
		want int
	}{
		{gogc: "", want: 400},
		{gogc: "50", want: 100}, // set by the runtime from GOGC at start: left as it is
		{gogc: "off", want: 100},
	}
	for _, tc := range cases {
		t.Run("GOGC="+tc.gogc, func(t *testing.T) {
			debug.SetGCPercent(100)
			SetGCPercent(func(k string) string {
				if k == "GOGC" {
					return tc.gogc
				}
				return ""
			}, 400)
			require.Equal(t, tc.want, debug.SetGCPercent(100))
		})
	}
}
