package auth_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/parleychat/parley/server/internal/auth"
)

func TestValidateUsername(t *testing.T) {
	t.Parallel()
	good := []string{"alice", "bob_2", "a.b-c", "abc", strings.Repeat("x", 32), "UPPER"}
	bad := []string{"", "a", "ab", "with space", "../../etc", "a/b", strings.Repeat("x", 33), strings.Repeat("y", 100),
		"zoë", "名前名前", "tab\there", "new\nline", "semi;colon", "at@sign", " alice", "alice "}
	for _, name := range good {
		if err := auth.ValidateUsername(name); err != nil {
			t.Errorf("ValidateUsername(%q) = %v, want nil", name, err)
		}
	}
	pattern := auth.UsernamePattern()
	if pattern == "" {
		t.Fatal("no username pattern in the contract")
	}
	for _, name := range bad {
		err := auth.ValidateUsername(name)
		if !errors.Is(err, auth.ErrInvalidUsername) || !strings.Contains(err.Error(), pattern) {
			t.Errorf("ValidateUsername(%q) = %v, want ErrInvalidUsername naming %s", name, err, pattern)
		}
	}
}
