package sqlite

import "context"

// Ping reports whether the database file answers within ctx, for the
// server's readiness probe. It uses the read pool, so a probe does not
// wait behind the single writer. Safe for concurrent use.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.mapErr(s.r.PingContext(ctx))
}
