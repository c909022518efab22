// Package storefault tells a failure of the storage itself (the database
// down, restarting or unreachable, the disk full or failing, a call that
// ran past its deadline) from a failure of one request, for both back
// ends, in one place. The first kind is wrapped with store.ErrUnavailable
// so that every caller answers it as Unavailable with a retry hint instead
// of Internal, and never as a refusal (NotFound, PermissionDenied).
//
// Everything here is a pure function of its arguments: safe for
// concurrent use.
package storefault

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/parleychat/parley/server/internal/store"
)

// Kind names the way the storage failed; it keys the aggregated fault log
// and is what an operator reads first.
type Kind string

// The kinds Classify tells apart.
const (
	KindNone       Kind = ""           // not a storage failure
	KindTimeout    Kind = "timeout"    // the call's deadline passed
	KindConnection Kind = "connection" // unreachable, refused, reset, shutting down
	KindDiskFull   Kind = "disk_full"  // no space left
	KindIO         Kind = "io"         // the disk failed a read or write
	KindBusy       Kind = "busy"       // locked or overloaded (too many connections)
	KindClosed     Kind = "closed"     // the store was closed (the node is stopping)
)

// Error is a storage failure: errors.Is(err, store.ErrUnavailable) holds,
// and the cause stays reachable with errors.As/Unwrap for the log.
type Error struct {
	Kind  Kind
	Cause error
}

func (e *Error) Error() string {
	return "store unavailable (" + string(e.Kind) + "): " + e.Cause.Error()
}

// Unwrap exposes both the sentinel and the cause.
func (e *Error) Unwrap() []error { return []error{store.ErrUnavailable, e.Cause} }

// Classify returns err wrapped as an *Error when it is a storage failure,
// and err unchanged otherwise (nil stays nil). A context deadline counts
// as a storage failure: the store call had a deadline and the store did
// not answer within it. A cancellation does not: the caller went away.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var fe *Error
	if errors.As(err, &fe) {
		return err
	}
	if k := KindOf(err); k != KindNone {
		return &Error{Kind: k, Cause: err}
	}
	return err
}

// Unavailable reports whether err is, or classifies as, a storage failure.
func Unavailable(err error) bool {
	return err != nil && (errors.Is(err, store.ErrUnavailable) || KindOf(err) != KindNone)
}

// KindOf says how the storage failed, or KindNone when err is a request's
// own failure (not found, a taken key, a value refused) or a cancellation.
func KindOf(err error) Kind {
	var fe *Error
	switch {
	case err == nil:
		return KindNone
	case errors.As(err, &fe):
		return fe.Kind
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExists), errors.Is(err, store.ErrRefreshTokenReused):
		return KindNone
	case errors.Is(err, store.ErrClosed), errors.Is(err, puddle.ErrClosedPool):
		return KindClosed
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(err, context.Canceled):
		return KindNone
	}
	if k := pgKind(err); k != KindNone {
		return k
	}
	if k := sqliteKind(err); k != KindNone {
		return k
	}
	return netKind(err)
}

// pgKind classifies PostgreSQL's own errors by SQLSTATE class, and pgx's
// failures to connect or to finish talking to the server.
func pgKind(err error) Kind {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"): // connection exception
			return KindConnection
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // admin/crash shutdown, cannot connect now
			return KindConnection
		case pe.Code == "53100": // disk_full
			return KindDiskFull
		case strings.HasPrefix(pe.Code, "53"): // out of memory, too many connections
			return KindBusy
		case strings.HasPrefix(pe.Code, "58"): // system error: I/O, undefined file
			return KindIO
		}
		return KindNone
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		if pgconn.Timeout(err) {
			return KindTimeout
		}
		return KindConnection
	}
	if pgconn.Timeout(err) {
		return KindTimeout
	}
	return KindNone
}

// sqliteKind classifies SQLite result codes by their primary code (the
// low byte; extended codes such as SQLITE_IOERR_WRITE keep it).
func sqliteKind(err error) Kind {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return KindNone
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
		return KindDiskFull
	case sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN:
		return KindIO
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM:
		return KindBusy
	}
	return KindNone
}

// netKind classifies what a broken connection looks like below the
// driver: refused, reset, closed mid-answer, timed out.
func netKind(err error) Kind {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return KindDiskFull
	case errors.Is(err, syscall.EIO):
		return KindIO
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return KindConnection
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return KindTimeout
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return KindConnection
	}
	// pgx reports a connection it closed after a failure without a typed
	// cause ("conn closed"); database/sql likewise ("driver: bad connection").
	msg := err.Error()
	if strings.Contains(msg, "conn closed") || strings.Contains(msg, "bad connection") {
		return KindConnection
	}
	return KindNone
}
