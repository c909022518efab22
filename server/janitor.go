package server

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// janitor runs RunJanitor at start and then hourly.
func (s *Server) janitor() {
	defer s.bg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		s.RunJanitor(s.bgCtx, time.Now())
		select {
		case <-t.C:
		case <-s.bgStop:
			return
		}
	}
}

// RunJanitor does one pass of the hourly clean-up as of now: it deletes
// expired refresh tokens and, when Retention is set, messages older than
// it, then the files no message references any more that were last used
// before now minus FileGrace (see package filegc). The server runs it
// itself; tests call it with a now in the future to age what is stored.
// Errors are logged and also returned, joined. Safe for concurrent use.
func (s *Server) RunJanitor(ctx context.Context, now time.Time) error {
	var errs []error
	step := func(d time.Duration, what string, f func(ctx context.Context) error) {
		// Each step has its own deadline, so that a slow one does not
		// starve the next.
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		if err := f(ctx); err != nil {
			s.log.Error(what, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	step(time.Minute, "delete expired refresh tokens", func(ctx context.Context) error {
		n, err := s.store.DeleteExpiredRefreshTokens(ctx, now)
		if n > 0 {
			s.log.Info("deleted expired refresh tokens", "count", n)
		}
		return err
	})
	if s.cfg.Retention <= 0 {
		return errors.Join(errs...)
	}
	step(time.Minute, "retention", func(ctx context.Context) error {
		n, err := s.store.DeleteMessagesBefore(ctx, now.Add(-s.cfg.Retention))
		if n > 0 {
			s.log.Info("retention deleted messages", "count", n)
		}
		return err
	})
	step(5*time.Minute, "file garbage collection", func(ctx context.Context) error {
		_, err := s.files.Sweep(ctx, now)
		return err
	})
	return errors.Join(errs...)
}
