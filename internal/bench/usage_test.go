package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildCommands builds the commands a fleet runs into a folder the test
// removes.
func buildCommands(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "../../cmd/exchange", "../../cmd/producer", "../../cmd/worker")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Run(), "build the commands")
	return dir
}

// TestUsage_TheSharedKeyDrawsNo429: a brief run of the usage-header benchmark.
func TestUsage_TheSharedKeyDrawsNo429(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	cfg := UsageConfig{Bin: buildCommands(t), Duration: 4 * time.Second, Warmup: 2 * time.Second}
	row, err := Usage(context.Background(), cfg)
	require.NoError(t, err)
	t.Log("\n" + FormatUsage([]UsageRow{row}, cfg))
	require.InDelta(t, 0.7*20/1.001, row.Bound, 1e-9)
	require.Zero(t, row.RateLimited, "no 429 on the shared key")
	require.Positive(t, row.OKPerSecond, "the shared key serves")
	require.Positive(t, row.Outside, "the outside client used it")
}
