package apierr_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/apierr"
	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/storefault"
)

// want is what one error must become, at a call boundary and in band.
type want struct {
	code  chatv1.ErrorCode
	grpc  codes.Code
	msg   string
	retry time.Duration // 0: no RetryInfo, no retry_after
}

// check asserts every rendering of e: the gRPC status (code, message,
// RetryInfo), the same after status.FromError on the error itself (as
// grpc-go converts a handler's return) and the in-band event.
func check(t *testing.T, e *apierr.Error, w want) {
	t.Helper()
	if e == nil {
		t.Fatal("nil *Error")
	}
	if e.Code != w.code || e.Msg != w.msg || e.RetryAfter != w.retry {
		t.Errorf("error = {%v %q %v}, want {%v %q %v}", e.Code, e.Msg, e.RetryAfter, w.code, w.msg, w.retry)
	}
	if got := e.GRPCCode(); got != w.grpc {
		t.Errorf("GRPCCode = %v, want %v", got, w.grpc)
	}
	for name, st := range map[string]*status.Status{"GRPCStatus": e.GRPCStatus(), "FromError": status.Convert(e)} {
		if st.Code() != w.grpc || st.Message() != w.msg {
			t.Errorf("%s = %v %q, want %v %q", name, st.Code(), st.Message(), w.grpc, w.msg)
		}
		var retry time.Duration
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				retry = ri.GetRetryDelay().AsDuration()
			}
		}
		if retry != w.retry {
			t.Errorf("%s RetryInfo = %v, want %v", name, retry, w.retry)
		}
	}
	ev := e.Event("req-7")
	if ev.GetRequestId() != "req-7" {
		t.Errorf("event request id %q", ev.GetRequestId())
	}
	got := ev.GetError()
	if got.GetCode() != w.code || got.GetMessage() != w.msg || got.GetRetryAfter().AsDuration() != w.retry || (w.retry == 0) != (got.RetryAfter == nil) {
		t.Errorf("event = %v, want code %v message %q retry_after %v", got, w.code, w.msg, w.retry)
	}
}

var storageDown = want{chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, codes.Unavailable, "storage unavailable; retry after 1s", apierr.StoreRetryAfter}

// TestFrom is the whole table: domain and store errors, every storefault
// class, context errors, and unknown errors, however deeply wrapped.
func TestFrom(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		err  error
		want want
	}{
		{"store not found", fmt.Errorf("get user: %w", store.ErrNotFound), want{chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, codes.NotFound, "not found", 0}},
		{"store exists", fmt.Errorf("create: %w", store.ErrExists), want{chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION, codes.AlreadyExists, "already exists", 0}},
		{"refresh token reused", fmt.Errorf("family f1a2: %w", store.ErrRefreshTokenReused), want{chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, codes.Unauthenticated, "refresh token reuse detected; log in again", 0}},
		{"store unavailable sentinel", fmt.Errorf("x: %w", store.ErrUnavailable), storageDown},
		{"classified fault", &storefault.Error{Kind: storefault.KindIO, Cause: errors.New("read /data/parley.db: EIO")}, storageDown},
		{"guard's Unavailable", fmt.Errorf("wrapped: %w", apierr.Unavailable(storefault.Classify(store.ErrClosed), apierr.StoreRetryAfter)), storageDown},
		{"closed store", fmt.Errorf("get user: %w", store.ErrClosed), storageDown},
		{"store deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), storageDown},
		{"connection refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), storageDown},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), storageDown},
		{"disk full", fmt.Errorf("write: %w", syscall.ENOSPC), storageDown},
		{"disk I/O", fmt.Errorf("fsync: %w", syscall.EIO), storageDown},
		// A fault is checked before the store's answers: a lookup that failed
		// must never read as "no such user" (or, in an access check, "no").
		{"fault joined with not found", errors.Join(store.ErrNotFound, store.ErrUnavailable), storageDown},
		{"cancelled", fmt.Errorf("get user: %w", context.Canceled), want{chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, codes.Canceled, "request cancelled", 0}},
		{"apierr passes through", fmt.Errorf("join: %w", apierr.PermissionDenied("room %q is private", "ops")), want{chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, codes.PermissionDenied, `room "ops" is private`, 0}},
		{"unknown", errors.New("pq: password authentication failed for user parley at 10.0.0.5"), want{chatv1.ErrorCode_ERROR_CODE_INTERNAL, codes.Internal, "internal error", 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := apierr.From(tt.err)
			check(t, e, tt.want)
			// The cause stays reachable for the log (and errors.Is), and
			// Status is the same mapping as an error, but for a call's own
			// end, which it passes through (TestStatus).
			if !errors.Is(e, tt.err) && !errors.Is(tt.err, e) {
				t.Errorf("From(%v) lost its cause", tt.err)
			}
			if errors.Is(tt.err, context.Canceled) || errors.Is(tt.err, context.DeadlineExceeded) {
				return
			}
			st, ok := status.FromError(apierr.Status(tt.err))
			if !ok || st.Code() != tt.want.grpc || st.Message() != tt.want.msg {
				t.Errorf("Status = %v, %v; want %v %q", st, ok, tt.want.grpc, tt.want.msg)
			}
		})
	}
	if apierr.From(nil) != nil || apierr.Status(nil) != nil {
		t.Error("nil must map to nil")
	}
}

// TestUnknownErrorLeaksNothing: the cause of an Internal error is for
// the server's log; no rendering sent to a client carries its text.
func TestUnknownErrorLeaksNothing(t *testing.T) {
	t.Parallel()
	const secret = "dsn=postgres://parley:hunter2@db"
	e := apierr.From(fmt.Errorf("open: %s", secret))
	sent := []string{e.Error(), e.Msg, e.GRPCStatus().Message(), e.GRPCStatus().String(), e.Event("r").String(), apierr.Status(e).Error()}
	for _, s := range sent {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("cause leaked: %q", s)
		}
	}
	if !strings.Contains(errors.Unwrap(e).Error(), "hunter2") {
		t.Fatal("the cause is not kept for the log")
	}
	if len(e.GRPCStatus().Details()) != 0 {
		t.Fatalf("Internal carries details: %v", e.GRPCStatus().Details())
	}
}

// TestConstructors: each constructor's codes at both boundaries.
func TestConstructors(t *testing.T) {
	t.Parallel()
	cause := errors.New("boom")
	for _, tt := range []struct {
		name string
		e    *apierr.Error
		want want
	}{
		{"InvalidArgument", apierr.InvalidArgument("bad %s", "room"), want{chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, codes.InvalidArgument, "bad room", 0}},
		{"NotFound", apierr.NotFound("user %q not found", "zed"), want{chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, codes.NotFound, `user "zed" not found`, 0}},
		{"PermissionDenied", apierr.PermissionDenied("no"), want{chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, codes.PermissionDenied, "no", 0}},
		{"FailedPrecondition", apierr.FailedPrecondition("join first"), want{chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION, codes.FailedPrecondition, "join first", 0}},
		{"Unauthenticated", apierr.Unauthenticated("token expired"), want{chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, codes.Unauthenticated, "token expired", 0}},
		{"AlreadyExists", apierr.AlreadyExists("username %q is taken", "dana"), want{chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION, codes.AlreadyExists, `username "dana" is taken`, 0}},
		{"Internal", apierr.Internal(), want{chatv1.ErrorCode_ERROR_CODE_INTERNAL, codes.Internal, "internal error", 0}},
		{"RateLimited", apierr.RateLimited("messages", 1500*time.Millisecond), want{chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED, codes.ResourceExhausted, "rate limit exceeded for messages; retry after 1.5s", 1500 * time.Millisecond}},
		{"Unavailable", apierr.Unavailable(cause, 2*time.Second), want{chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, codes.Unavailable, "storage unavailable; retry after 2s", 2 * time.Second}},
		{"Busy", apierr.Busy("logins", time.Second), want{chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE, codes.Unavailable, "too many logins in progress; retry in 1s", time.Second}},
		{"unspecified code", apierr.New(chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, "odd"), want{chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, codes.Internal, "odd", 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			check(t, tt.e, tt.want)
			if apierr.From(tt.e) != tt.e {
				t.Error("From changed an *Error")
			}
		})
	}
	if u := apierr.Unavailable(cause, time.Second); !errors.Is(u, cause) || strings.Contains(u.GRPCStatus().Message(), "boom") {
		t.Errorf("Unavailable: cause kept %v, message %q", errors.Is(u, cause), u.GRPCStatus().Message())
	}
}

// TestAsUnavailable: true for every storage failure, keeping an existing
// Unavailable as it is; false for everything else.
func TestAsUnavailable(t *testing.T) {
	t.Parallel()
	guard := apierr.Unavailable(storefault.Classify(syscall.ECONNREFUSED), 3*time.Second)
	if e, ok := apierr.AsUnavailable(fmt.Errorf("w: %w", guard)); !ok || e != guard {
		t.Errorf("guard's error: %v, %v", e, ok)
	}
	for _, err := range []error{store.ErrUnavailable, store.ErrClosed, context.DeadlineExceeded, syscall.ENOSPC} {
		e, ok := apierr.AsUnavailable(fmt.Errorf("w: %w", err))
		if !ok || e.Code != chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE || e.RetryAfter != apierr.StoreRetryAfter || !errors.Is(e, err) {
			t.Errorf("AsUnavailable(%v) = %v, %v", err, e, ok)
		}
	}
	for _, err := range []error{nil, store.ErrNotFound, store.ErrExists, context.Canceled, errors.New("x"), apierr.Internal(), apierr.Busy("logins", time.Second)} {
		if e, ok := apierr.AsUnavailable(err); ok {
			t.Errorf("AsUnavailable(%v) = %v, want false", err, e)
		}
	}
}

// TestInBand: the wrapper a stream's RecvMsg returns is found through
// wrapping and exposes its *Error.
func TestInBand(t *testing.T) {
	t.Parallel()
	inner := apierr.RateLimited("typing", time.Second)
	err := fmt.Errorf("recv: %w", &apierr.InBand{RequestID: "r9", Err: inner})
	ib, ok := apierr.AsInBand(err)
	if !ok || ib.RequestID != "r9" || ib.Err != inner {
		t.Fatalf("AsInBand = %v, %v", ib, ok)
	}
	if !errors.Is(err, inner) || apierr.From(err) != inner {
		t.Fatal("the *Error inside an InBand is not reachable")
	}
	if !strings.Contains(ib.Error(), "in-band") || !strings.Contains(ib.Error(), "RATE_LIMITED") {
		t.Fatalf("Error() = %q", ib.Error())
	}
	if _, ok := apierr.AsInBand(inner); ok {
		t.Fatal("an *Error is not an InBand")
	}
}

// TestStatus is the mapping at a call boundary: a status decided below
// and the call's own end pass through unchanged; everything else is
// From's table, so no storage failure ever reads as a refusal.
func TestStatus(t *testing.T) {
	t.Parallel()
	limited, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)})
	for _, err := range []error{
		status.Error(codes.PermissionDenied, "not a member of ops"),
		status.Error(codes.InvalidArgument, "bad room"),
		limited.Err(),
		fmt.Errorf("join: %w", status.Error(codes.NotFound, "no such room")),
	} {
		if got := apierr.Status(err); got != err {
			t.Errorf("Status(%v) = %v, want it unchanged", err, got)
		}
	}
	if d := status.Convert(apierr.Status(limited.Err())).Details(); len(d) != 1 {
		t.Errorf("details lost: %v", d)
	}

	storageDownStatus := status.Convert(apierr.Unavailable(nil, apierr.StoreRetryAfter))
	for _, tt := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		// The call's own end, as grpc-go reports it.
		{"cancelled", context.Canceled, codes.Canceled, "context canceled"},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "context deadline exceeded"},
		{"wrapped cancel", fmt.Errorf("attach: %w", context.Canceled), codes.Canceled, "attach: context canceled"},
		{"wrapped deadline", fmt.Errorf("attach: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "attach: context deadline exceeded"},
		// Storage named beside a context error: a storage failure.
		{"classified store timeout", storefault.Classify(fmt.Errorf("query: %w", context.DeadlineExceeded)), codes.Unavailable, storageDownStatus.Message()},
		{"store unavailable and deadline", errors.Join(store.ErrUnavailable, context.DeadlineExceeded), codes.Unavailable, storageDownStatus.Message()},
		{"closed store and cancel", errors.Join(store.ErrClosed, context.Canceled), codes.Unavailable, storageDownStatus.Message()},
		{"guard's Unavailable of a store deadline", apierr.Unavailable(storefault.Classify(context.DeadlineExceeded), apierr.StoreRetryAfter), codes.Unavailable, storageDownStatus.Message()},
		// An *Error wins over anything in its chain.
		{"apierr around a status", fmt.Errorf("x: %w", apierr.PermissionDenied("no")), codes.PermissionDenied, "no"},
		// Unknown is not a decision: Internal, the cause hidden.
		{"unknown status", status.Error(codes.Unknown, "pq: secret"), codes.Internal, "internal error"},
		{"plain error", errors.New("boom"), codes.Internal, "internal error"},
		{"not found", fmt.Errorf("get: %w", store.ErrNotFound), codes.NotFound, "not found"},
	} {
		st := status.Convert(apierr.Status(tt.err))
		if st.Code() != tt.code || st.Message() != tt.msg {
			t.Errorf("%s: Status = %v %q, want %v %q", tt.name, st.Code(), st.Message(), tt.code, tt.msg)
		}
	}

	// No store error, alone, wrapped, joined with a context error or a
	// fault, is ever a refusal.
	for _, base := range []error{store.ErrNotFound, store.ErrExists, store.ErrRefreshTokenReused, store.ErrUnavailable, store.ErrClosed,
		syscall.ECONNREFUSED, syscall.ENOSPC, syscall.EIO, &storefault.Error{Kind: storefault.KindIO, Cause: errors.New("EIO")}} {
		for _, err := range []error{base, fmt.Errorf("w: %w", base), errors.Join(base, context.Canceled), errors.Join(base, context.DeadlineExceeded), errors.Join(store.ErrNotFound, base)} {
			if c := status.Code(apierr.Status(err)); c == codes.PermissionDenied || c == codes.Unauthenticated && !errors.Is(err, store.ErrRefreshTokenReused) {
				t.Errorf("Status(%v) = %v: a store error read as a refusal", err, c)
			}
		}
	}
	if apierr.Status(nil) != nil {
		t.Error("nil must map to nil")
	}
}

// TestStatusLog logs the cause of what Status hides (an Internal's, an
// unclassified storage failure's) and nothing else.
func TestStatusLog(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err    error
		logged bool
	}{
		{errors.New("pq: syntax error"), true},
		{status.Error(codes.Unknown, "odd"), true},
		{fmt.Errorf("read blob: %w", syscall.EIO), true},
		{apierr.Internal(), false},                                                                // made by code that logged it, or had nothing to say
		{apierr.Unavailable(storefault.Classify(store.ErrClosed), apierr.StoreRetryAfter), false}, // logged by the guard
		{status.Error(codes.PermissionDenied, "no"), false},
		{context.Canceled, false},
		{fmt.Errorf("get: %w", store.ErrNotFound), false},
	} {
		var buf strings.Builder
		log := slog.New(slog.NewTextHandler(&buf, nil))
		st := apierr.StatusLog(log, "call failed", tt.err)
		if got := strings.Contains(buf.String(), "call failed"); got != tt.logged {
			t.Errorf("StatusLog(%v): logged %v, want %v (%q)", tt.err, got, tt.logged, buf.String())
		}
		if st.Error() != apierr.Status(tt.err).Error() {
			t.Errorf("StatusLog(%v) = %v, Status = %v", tt.err, st, apierr.Status(tt.err))
		}
	}
}
