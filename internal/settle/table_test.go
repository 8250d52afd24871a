package settle_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/upstream"
)

// Each answer class has one outcome, named as the stats count it, and only the
// upstream's own answers are reported to the limiter as arrivals.
func TestOf_OneNamePerOutcomeEndToEnd(t *testing.T) {
	tests := []struct {
		class  upstream.Class
		report settle.Report
		key    settle.KeyAction
		msg    settle.MsgAction
	}{
		{upstream.OK, settle.Answered, settle.KeyNothing, settle.MsgServe},
		{upstream.RateLimited, settle.Rejected, settle.KeyCount429, settle.MsgRetry},
		{upstream.BadNonce, settle.Inverted, settle.KeyNewNonces, settle.MsgRetry},
		{upstream.KeyUnusable, settle.Answered, settle.KeyUnusable, settle.MsgRetry},
		{upstream.ServerError, settle.Answered, settle.KeyNothing, settle.MsgRetry},
		{upstream.Gateway, settle.LostUntil, settle.KeyNothing, settle.MsgRetry},
		{upstream.Timeout, settle.Lost, settle.KeyNothing, settle.MsgRetry},
		{upstream.ConnError, settle.Lost, settle.KeyNothing, settle.MsgRetry},
		{upstream.Fenced, settle.Lost, settle.KeyLeaseLost, settle.MsgBack},
	}
	for _, tt := range tests {
		t.Run(tt.class.String(), func(t *testing.T) {
			out := settle.Of(tt.class)
			require.Equal(t, tt.class.String(), out.Name)
			require.Contains(t, stats.AttemptResults(), out.Name, "counted under the class's own name")
			require.Equal(t, tt.report, out.Report)
			require.Equal(t, tt.key, out.Key)
			require.Equal(t, tt.msg, out.Msg)
			require.Equal(t, tt.class.Arrived(), out.Report == settle.Answered || out.Report == settle.Rejected || out.Report == settle.Inverted,
				"reported as an arrival exactly when the answer proves one")
		})
	}
}
