package parley

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// ErrClosed is returned by the commands of a Session that has ended. The
// error wraps both ErrClosed and, when there is one, the reason the session
// ended (see [Session.Err]).
var ErrClosed = errors.New("parley: session closed")

// Error is a command the server refused inside a live session (a
// ServerEvent.error answering the command's request id). The session stays
// open after it.
type Error struct {
	// Code says what went wrong.
	Code chatv1.ErrorCode
	// Message is the server's explanation, safe to show to a user.
	Message string
	// RetryAfter is how long to wait before trying again; set with
	// ERROR_CODE_RATE_LIMITED, zero otherwise.
	RetryAfter time.Duration
	// RequestID is the id of the command this error answers.
	RequestID string
}

func (e *Error) Error() string {
	s := "parley: " + codeName(e.Code) + ": " + e.Message
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

func codeName(c chatv1.ErrorCode) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "ERROR_CODE_"))
}

func errorFromEvent(ev *chatv1.ServerEvent) *Error {
	e := ev.GetError()
	return &Error{Code: e.GetCode(), Message: e.GetMessage(), RetryAfter: e.GetRetryAfter().AsDuration(), RequestID: ev.GetRequestId()}
}

// CodeOf returns the chat.v1 ErrorCode of err: the Code of an [*Error] in
// its chain, or, for a gRPC status error (from a unary call or a session's
// end), the ErrorCode that matches its gRPC code. It returns
// ERROR_CODE_UNSPECIFIED for nil, for errors of neither kind and for gRPC
// codes with no counterpart (Canceled, DeadlineExceeded, Aborted); use
// status.Code for those.
func CodeOf(err error) chatv1.ErrorCode {
	if err == nil {
		return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	st, ok := status.FromError(err)
	if !ok {
		return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	case codes.NotFound:
		return chatv1.ErrorCode_ERROR_CODE_NOT_FOUND
	case codes.PermissionDenied:
		return chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED
	case codes.ResourceExhausted:
		return chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED
	case codes.Unauthenticated:
		return chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED
	case codes.FailedPrecondition, codes.AlreadyExists:
		return chatv1.ErrorCode_ERROR_CODE_FAILED_PRECONDITION
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return chatv1.ErrorCode_ERROR_CODE_INTERNAL
	case codes.Unavailable:
		return chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
}
