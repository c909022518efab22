package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/store"
)

// errRefused is a UserCheck's refusal in these checks.
var errRefused = errors.New("storetest: refused by the check")

// UpdateUser checks an admin's change to a user on an empty store: the
// check sees the row as stored, a refusal comes back as it is and changes
// nothing, the fields set are written and the others kept, and an unknown
// user or role is refused before any check.
func UpdateUser(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	mustUser(t, s, "carol")
	mustUser(t, s, "dave")
	stored := func(name string) store.User {
		t.Helper()
		u, err := s.GetUser(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	before := stored("carol")
	var seen store.User
	calls := 0
	check := func(refusal error) store.UserCheck {
		return func(u store.User) error { calls++; seen = u; return refusal }
	}
	off, on := false, true

	if err := s.UpdateUser(ctx, "carol", check(errRefused), store.UserChange{Active: &off, Role: store.RoleAdmin}); err != errRefused {
		t.Fatalf("refused change: %v, want the check's error as it is", err)
	}
	if seen != before {
		t.Fatalf("the check saw %+v, want the stored row %+v", seen, before)
	}
	if got := stored("carol"); got != before {
		t.Fatalf("a refused change was written: %+v", got)
	}

	for _, step := range []struct {
		name   string
		change store.UserChange
		active bool
		role   string
	}{
		{"active only", store.UserChange{Active: &off}, false, store.RoleUser},
		{"role only", store.UserChange{Role: store.RoleModerator}, false, store.RoleModerator},
		{"both", store.UserChange{Active: &on, Role: store.RoleAdmin}, true, store.RoleAdmin},
		{"nothing", store.UserChange{}, true, store.RoleAdmin},
	} {
		prev := stored("carol")
		if err := s.UpdateUser(ctx, "carol", check(nil), step.change); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if seen != prev {
			t.Fatalf("%s: the check saw %+v, want %+v", step.name, seen, prev)
		}
		got := stored("carol")
		if got.Active != step.active || got.Role != step.role || got.PasswordHash != prev.PasswordHash || !got.CreatedAt.Equal(prev.CreatedAt) {
			t.Fatalf("%s: %+v, want active %v role %s and the rest as it was (%+v)", step.name, got, step.active, step.role, prev)
		}
	}

	calls = 0
	if err := s.UpdateUser(ctx, "nobody", check(nil), store.UserChange{Active: &off}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown user: %v, want ErrNotFound", err)
	}
	if err := s.UpdateUser(ctx, "carol", check(nil), store.UserChange{Role: "root"}); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown role: %v, want it refused", err)
	}
	if calls != 0 {
		t.Fatalf("the check ran %d times for an unknown user or role", calls)
	}
	if got := stored("dave"); got.Role != store.RoleUser || !got.Active {
		t.Fatalf("another user changed: %+v", got)
	}
}

// raceWindow is how long a check that holds its transaction open gives
// the other side's change to slip in. With the rule kept, that change
// waits for the transaction and the window simply passes; it bounds how
// long a store that breaks the rule would take to show it.
const raceWindow = 200 * time.Millisecond

// UpdateUserRace checks that UpdateUser reads the target's role in the
// same transaction as its write, over b.Nodes stores on one database (a
// moderator on one node, an admin on another): a moderator deactivating a
// user while an admin promotes that user to admin must not win. Whichever
// transaction reads first decides; the other one sees what it wrote.
func UpdateUserRace(t *testing.T, b Backend) {
	t.Helper()
	s1, db := b.open(t, Options{})
	admin, moderator := s1, s1
	if b.Nodes > 1 {
		moderator = b.mustOpen(t, db, Options{})
	}
	off := false
	// The moderator's rule: a role above the target's (here: a user).
	modCheck := func(seen *store.User) store.UserCheck {
		return func(u store.User) error {
			*seen = u
			if u.Role != store.RoleUser {
				return errRefused
			}
			return nil
		}
	}

	t.Run("the promotion reads first", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mustUser(t, s1, "erin")
		inTx, modStarted, modDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
		var modSeen store.User
		var modErr error
		go func() {
			defer close(modDone)
			<-inTx
			close(modStarted)
			modErr = moderator.UpdateUser(ctx, "erin", modCheck(&modSeen), store.UserChange{Active: &off})
		}()
		err := admin.UpdateUser(ctx, "erin", func(store.User) error {
			close(inTx)
			<-modStarted
			select { // the moderator's change must wait for this transaction
			case <-modDone:
			case <-time.After(raceWindow):
			}
			return nil
		}, store.UserChange{Role: store.RoleAdmin})
		if err != nil {
			t.Fatalf("promotion: %v", err)
		}
		<-modDone
		if modErr != errRefused || modSeen.Role != store.RoleAdmin {
			t.Fatalf("the moderator's change returned %v having seen %+v: it read the role outside its transaction, before the promotion committed", modErr, modSeen)
		}
		if u, err := s1.GetUser(ctx, "erin"); err != nil || u.Role != store.RoleAdmin || !u.Active {
			t.Fatalf("after the race: %+v, %v; want an active admin", u, err)
		}
	})

	t.Run("the moderator reads first", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mustUser(t, s1, "frank")
		inTx, adminStarted, adminDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
		var adminSeen store.User
		var adminErr error
		go func() {
			defer close(adminDone)
			<-inTx
			close(adminStarted)
			adminErr = admin.UpdateUser(ctx, "frank", func(u store.User) error { adminSeen = u; return nil }, store.UserChange{Role: store.RoleAdmin})
		}()
		var modSeen store.User
		check := modCheck(&modSeen)
		err := moderator.UpdateUser(ctx, "frank", func(u store.User) error {
			close(inTx)
			<-adminStarted
			select { // the promotion must wait for this transaction
			case <-adminDone:
			case <-time.After(raceWindow):
			}
			return check(u)
		}, store.UserChange{Active: &off})
		if err != nil {
			t.Fatalf("the moderator's change, on a user: %v", err)
		}
		<-adminDone
		if adminErr != nil || adminSeen.Active {
			t.Fatalf("the promotion returned %v having seen %+v: it committed between the moderator's check and write", adminErr, adminSeen)
		}
		if u, err := s1.GetUser(ctx, "frank"); err != nil || u.Role != store.RoleAdmin || u.Active {
			t.Fatalf("after the race: %+v, %v; want an inactive admin (deactivated as a user, then promoted)", u, err)
		}
	})
}
