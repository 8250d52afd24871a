package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
)

// TestRun_RefusesAKeysFileOthersMayRead runs the worker with a keys file its
// group and others may read: it is refused with the chmod that fixes it, before
// any connection; with --insecure-file-mode the worker warns and goes on (to a
// NATS that is not there).
func TestRun_RefusesAKeysFileOthersMayRead(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, name := range cli.EnvNames() {
		t.Setenv(name, "")
	}
	path := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(path, []byte("k1=S3CR3TKEY\n"), 0o600))
	require.NoError(t, os.Chmod(path, 0o644))
	args := []string{"--keys-file", path, "--nats", "nats://127.0.0.1:1"}

	var stderr strings.Builder
	err := run(context.Background(), args, &stderr, &stderr)
	require.ErrorIs(t, err, cli.ErrFileMode)
	require.ErrorContains(t, err, "--keys-file "+path)
	require.ErrorContains(t, err, "chmod 600 "+path)

	stderr.Reset()
	err = run(context.Background(), append(args, "--insecure-file-mode"), &stderr, &stderr)
	require.ErrorContains(t, err, "connect to NATS", "past the keys file")
	require.Contains(t, stderr.String(), "chmod 600")
	require.NotContains(t, stderr.String()+err.Error(), "S3CR3TKEY")
}
