package postgres

import "context"

// Ping reports whether the database answers within ctx, for the server's
// readiness probe. It uses the read pool, never the append writer's
// connection, so a probe does not queue behind a commit. Safe for
// concurrent use.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.mapErr(s.db.Ping(ctx))
}
