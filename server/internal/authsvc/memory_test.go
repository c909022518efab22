package authsvc

import (
	"runtime/debug"
	"testing"

	"github.com/parleychat/parley/server/internal/auth"
)

// TestHashMemoryBudget: the budget is an eighth of what the process may
// use, here bounded by a Go memory limit, and never less than one hash or
// more than 1 GiB.
func TestHashMemoryBudget(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	for _, tt := range []struct{ limit, want int64 }{
		{800 << 20, 100 << 20},
		{16 << 20, auth.HashMemory},
	} {
		debug.SetMemoryLimit(tt.limit)
		if got := HashMemoryBudget(); got != tt.want && !(got < tt.want && got >= auth.HashMemory) {
			// Less is right when the machine or the cgroup has less than the
			// limit available.
			t.Errorf("limit %d: budget %d, want %d (or less, from available memory)", tt.limit, got, tt.want)
		}
	}
	debug.SetMemoryLimit(old)
	if got := HashMemoryBudget(); got < auth.HashMemory || got > maxHashMemoryBudget {
		t.Fatalf("budget %d outside [%d, %d]", got, auth.HashMemory, maxHashMemoryBudget)
	}
}
