// Package apierr is the one place where Parley's failures are mapped to
// codes: to a gRPC status at a call or stream boundary, and to an in-band
// chat.v1.Error event for a failed command inside a live stream. From is
// the table: a storage failure (store.ErrUnavailable, or any error
// storefault classifies, such as a closed store) maps to Unavailable with
// a retry hint, so clients retry instead of giving up, and never to a
// refusal (PermissionDenied, NotFound); the store's own answers (not
// found, taken, a reused refresh token) map to their codes; anything else
// is Internal, whose message never carries the cause. Status applies it
// at a call boundary, where a status decided below and the call's own
// cancellation or deadline pass through as they are.
//
// Errors are immutable values: safe for concurrent use.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storefault"
)

// Error is a failure with a chat.v1 error code and a message safe to show
// to the client.
type Error struct {
	Code       chatv1.ErrorCode
	Msg        string
	RetryAfter time.Duration // set with ERROR_CODE_RATE_LIMITED and ERROR_CODE_UNAVAILABLE
	// grpc, when set, is the gRPC code for a failure chat.v1.ErrorCode has
	// no name for (AlreadyExists, Canceled, DeadlineExceeded); Code is then
	// the nearest in-band code.
	grpc codes.Code
	// cause is what failed, for errors.Is/As and the server's log; it is
	// never sent.
	cause error
}

// New returns an *Error with a formatted message.
func New(code chatv1.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Convenience constructors for the common codes.
func InvalidArgument(format string, args ...any) *Error {
	return New(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, format, args...)
}

// NotFound is ERROR_CODE_NOT_FOUND.
func NotFound(format string, args ...any) *Error {
	return New(chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, format, args...)
}

// PermissionDenied is ERROR_CODE_PERMISSION_DENIED.
func PermissionDenied(format string, args ...any) *Error {
	return New(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, format, args...)
}

// FailedPrecondition is ERROR_CODE_FAILED_PRECONDITION.
func FailedPrecondition(format string, args ...any) *Error {
	return New(chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION, format, args...)
}

// Unauthenticated is ERROR_CODE_UNAUTHENTICATED, e.g. a refused in-band
// token refresh.
func Unauthenticated(format string, args ...any) *Error {
	return New(chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, format, args...)
}

// Internal is ERROR_CODE_INTERNAL. Its message never carries the cause.
func Internal() *Error {
	return New(chatv1.ErrorCode_ERROR_CODE_INTERNAL, "internal error")
}

// AlreadyExists is gRPC AlreadyExists (in band, the nearest code:
// ERROR_CODE_FAILED_PRECONDITION), e.g. a username that is taken.
func AlreadyExists(format string, args ...any) *Error {
	e := New(chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION, format, args...)
	e.grpc = codes.AlreadyExists
	return e
}

// Busy is ERROR_CODE_UNAVAILABLE for work refused because too many of
// what are in progress (e.g. password hashes), with a retry hint.
func Busy(what string, retryAfter time.Duration) *Error {
	e := New(chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "too many %s in progress; retry in %s", what, retryAfter.Round(time.Millisecond))
	e.RetryAfter = retryAfter
	return e
}

// RateLimited is ERROR_CODE_RATE_LIMITED with a retry hint.
func RateLimited(what string, retryAfter time.Duration) *Error {
	e := New(chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED, "rate limit exceeded for %s; retry after %s", what, retryAfter.Round(time.Millisecond))
	e.RetryAfter = retryAfter
	return e
}

// StoreRetryAfter is the retry hint sent with a storage failure: long
// enough that clients retrying together do not hammer a store that is
// coming back, short enough that a blip costs them little.
const StoreRetryAfter = time.Second

// Unavailable is ERROR_CODE_UNAVAILABLE for a storage failure (cause is
// kept for errors.Is and the log, never sent): the request may be retried
// after retryAfter.
func Unavailable(cause error, retryAfter time.Duration) *Error {
	e := New(chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "storage unavailable; retry after %s", retryAfter.Round(time.Millisecond))
	e.RetryAfter = retryAfter
	e.cause = cause
	return e
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Msg }

// Unwrap exposes the cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// GRPCCode maps the error code to a gRPC code.
func (e *Error) GRPCCode() codes.Code {
	if e.grpc != codes.OK {
		return e.grpc
	}
	switch e.Code {
	case chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT:
		return codes.InvalidArgument
	case chatv1.ErrorCode_ERROR_CODE_NOT_FOUND:
		return codes.NotFound
	case chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED:
		return codes.PermissionDenied
	case chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
		return codes.ResourceExhausted
	case chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED:
		return codes.Unauthenticated
	case chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION:
		return codes.FailedPrecondition
	case chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE:
		return codes.Unavailable
	}
	return codes.Internal
}

// GRPCStatus lets status.FromError and grpc-go turn an *Error into a status.
// A retry hint travels as a google.rpc.RetryInfo detail.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.GRPCCode(), e.Msg)
	if e.RetryAfter > 0 {
		if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)}); err == nil {
			st = d
		}
	}
	return st
}

// Event renders the error as the in-band event answering requestID.
func (e *Error) Event(requestID string) *chatv1.ServerEvent {
	ev := &chatv1.Error{Code: e.Code, Message: e.Msg}
	if e.RetryAfter > 0 {
		ev.RetryAfter = durationpb.New(e.RetryAfter)
	}
	return &chatv1.ServerEvent{RequestId: requestID, Event: &chatv1.ServerEvent_Error{Error: ev}}
}

// InBand is returned by a stream's RecvMsg (from an interceptor) when one
// received command was refused but the stream lives on: the handler answers
// with Err.Event(RequestID), drops the command and reads the next one.
type InBand struct {
	RequestID string
	Err       *Error
}

func (e *InBand) Error() string { return "in-band: " + e.Err.Error() }

// Unwrap exposes the underlying *Error.
func (e *InBand) Unwrap() error { return e.Err }

// AsInBand reports whether err is an *InBand.
func AsInBand(err error) (*InBand, bool) {
	var ib *InBand
	ok := errors.As(err, &ib)
	return ib, ok
}

// From returns err as an *Error, the one table of Parley's failures:
//
//   - an *Error anywhere in the chain: itself;
//   - a storage failure (store.ErrUnavailable in the chain, or an error
//     storefault classifies: a closed store, a lost connection, a full
//     disk, context.DeadlineExceeded, which storefault counts as a store
//     that did not answer in time): Unavailable with StoreRetryAfter;
//   - context.Canceled: gRPC Canceled (in band UNAVAILABLE), the caller
//     went away;
//   - store.ErrNotFound: NotFound; store.ErrExists: AlreadyExists;
//     store.ErrRefreshTokenReused: Unauthenticated. Callers with a better
//     message (which record) use the constructors instead;
//   - anything else: Internal, with err kept as the cause for the log and
//     never sent.
//
// A storage failure is checked before the store's answers, so a fault in
// an access check can never read as a refusal. nil gives nil.
func From(err error) *Error {
	var e *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return e
	case storefault.Unavailable(err):
		return Unavailable(storefault.Classify(err), StoreRetryAfter)
	case errors.Is(err, context.Canceled):
		e = New(chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "request cancelled")
		e.grpc = codes.Canceled
	case errors.Is(err, store.ErrNotFound):
		e = NotFound("not found")
	case errors.Is(err, store.ErrExists):
		e = AlreadyExists("already exists")
	case errors.Is(err, store.ErrRefreshTokenReused):
		e = Unauthenticated("refresh token reuse detected; log in again")
	default:
		e = Internal()
	}
	e.cause = err
	return e
}

// Status is err as the gRPC status error a call or stream ends with, for
// a handler's return (the one mapping at every call boundary: chatsvc's
// calls, the session engine's open, auth, admin); nil gives nil.
//
//   - an *Error anywhere in the chain: its status;
//   - an error that already is a gRPC status (other than Unknown): err
//     itself, details and all; something below decided it (grpc-go, an
//     interceptor, a peer);
//   - the call's own end, context.Canceled or context.DeadlineExceeded
//     with no storage failure named beside it: Canceled or
//     DeadlineExceeded, as grpc-go reports them (status.FromContextError).
//     The store guard has already turned a store's own deadline into an
//     Unavailable *Error, and passes the caller's through as it is;
//   - anything else: From's table, so a storage failure is Unavailable and
//     never a refusal, and an unknown error is Internal without its cause.
func Status(err error) error {
	st, _ := boundary(err)
	return st
}

// StatusLog is Status, logging with log, as msg, the cause of what the
// client is not told: the cause of an Internal error, or a storage failure
// no guard had classified (a classified one is an *Error already, logged
// in aggregate where the store is called).
func StatusLog(log *slog.Logger, msg string, err error) error {
	st, hidden := boundary(err)
	if hidden {
		log.Error(msg, "err", err)
	}
	return st
}

// boundary is Status, and whether it hid err's cause.
func boundary(err error) (st error, hidden bool) {
	var e *Error
	switch {
	case err == nil:
		return nil, false
	case errors.As(err, &e):
		return e.GRPCStatus().Err(), false
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return err, false
	}
	if callEnded(err) {
		return status.FromContextError(err).Err(), false
	}
	e = From(err)
	c := e.GRPCCode()
	return e.GRPCStatus().Err(), c == codes.Internal || c == codes.Unavailable
}

// callEnded reports whether err is a call's own end (its context cancelled
// or past its deadline) rather than a storage failure that wraps one: a
// fault storefault classified, store.ErrUnavailable, or a closed store.
func callEnded(err error) bool {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var fe *storefault.Error
	if errors.As(err, &fe) || errors.Is(err, store.ErrUnavailable) {
		return false
	}
	k := storefault.KindOf(err)
	return k == storefault.KindNone || k == storefault.KindTimeout
}

// AsUnavailable returns err as an *Error when it is a storage failure
// (see From), for callers that map the rest of their errors themselves.
func AsUnavailable(err error) (*Error, bool) {
	if !storefault.Unavailable(err) {
		return nil, false
	}
	var e *Error
	if errors.As(err, &e) && e.Code == chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE {
		return e, true
	}
	return Unavailable(storefault.Classify(err), StoreRetryAfter), true
}
