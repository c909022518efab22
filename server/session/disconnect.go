package session

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/hub"
)

// Code is a Disconnect code: the WebSocket close code, and the code of the
// Disconnect event every transport sends before it ends a session.
type Code uint32

// The codes of chat.proto's Disconnect table.
const (
	CodeNormal          Code = 1000 // the session ended normally
	CodeGoingAway       Code = 1001 // server shutting down, or peer unresponsive
	CodeSlowConsumer    Code = 1008 // its send queue was full
	CodeTooBig          Code = 1009 // a frame larger than the limit
	CodeUnavailable     Code = 1012 // restarting or overloaded
	CodeBadRequest      Code = 4400 // protocol error before the stream
	CodeUnauthenticated Code = 4401 // bad or expired token
	CodePermission      Code = 4403 // permission denied
	CodeFirstFrame      Code = 4408 // no first frame in time
	CodeAdmin           Code = 4409 // disconnected by a moderator or admin
	CodeLimited         Code = 4429 // rate or connection limit
	CodeServerError     Code = 4500 // any other server error
)

// rule is one row of the table: what a client does, and the gRPC status
// code a gRPC stream ends with.
type rule struct {
	reconnect bool
	status    codes.Code
}

// table is the one table of how sessions end (chat.proto's Disconnect
// comment); the close code, the status and the event all come from it.
var table = map[Code]rule{
	CodeNormal:          {false, codes.OK},
	CodeGoingAway:       {true, codes.Unavailable},
	CodeSlowConsumer:    {true, codes.ResourceExhausted},
	CodeTooBig:          {false, codes.InvalidArgument},
	CodeUnavailable:     {true, codes.Unavailable},
	CodeBadRequest:      {false, codes.InvalidArgument},
	CodeUnauthenticated: {true, codes.Unauthenticated},
	CodePermission:      {false, codes.PermissionDenied},
	CodeFirstFrame:      {true, codes.InvalidArgument},
	CodeAdmin:           {false, codes.Aborted},
	CodeLimited:         {true, codes.ResourceExhausted},
	CodeServerError:     {true, codes.Internal},
}

// Disconnect is why a session ended: its code (from the table), a reason
// for people, and how long a client should wait before it reconnects (when
// the table says it should). The zero value is CodeNormal's.
type Disconnect struct {
	Code       Code
	Reason     string
	RetryAfter time.Duration
	// final is the gRPC status the session ended with, when it came from
	// one (FromStatus): a gRPC stream ends with it as it is, details and
	// all (a cancelled call ends 4500 on /ws but Canceled on gRPC).
	final   error
	fromErr bool
}

// Reconnect reports whether a client should reconnect after d.
func (d Disconnect) Reconnect() bool { return d.code().reconnect }

func (d Disconnect) code() rule {
	if d.Code == 0 {
		return table[CodeNormal]
	}
	if r, ok := table[d.Code]; ok {
		return r
	}
	return table[CodeServerError]
}

// Err is d as a gRPC status error, nil for a normal end.
func (d Disconnect) Err() error {
	if d.fromErr {
		return d.final
	}
	if c := d.code().status; c != codes.OK {
		return status.Error(c, d.Reason)
	}
	return nil
}

// Event is d as the ServerEvent sent before the close.
func (d Disconnect) Event() *chatv1.ServerEvent {
	code := d.Code
	if code == 0 {
		code = CodeNormal
	}
	ev := &chatv1.Disconnect{Code: uint32(code), Reason: d.Reason, Reconnect: d.Reconnect()}
	if d.RetryAfter > 0 {
		ev.RetryAfter = durationpb.New(d.RetryAfter)
	}
	return &chatv1.ServerEvent{Event: &chatv1.ServerEvent_Disconnect{Disconnect: ev}}
}

// FromStatus is the Disconnect of a session that ended with the gRPC
// status err (nil for OK). Its gRPC status stays err's own.
func FromStatus(err error) Disconnect {
	st := status.Convert(err)
	d := Disconnect{Reason: st.Message(), final: st.Err(), fromErr: true}
	switch st.Code() {
	case codes.OK:
		d.Code = CodeNormal
	case codes.Unauthenticated:
		d.Code = CodeUnauthenticated
	case codes.PermissionDenied:
		d.Code = CodePermission
	case codes.ResourceExhausted:
		d.Code = CodeLimited
		d.RetryAfter = retryAfter(st)
	case codes.Unavailable:
		d.Code = CodeUnavailable
	default:
		d.Code = CodeServerError
	}
	return d
}

// retryAfter reads the RetryInfo a limit's status carries, if any.
func retryAfter(st *status.Status) time.Duration {
	for _, det := range st.Details() {
		if ri, ok := det.(interface{ GetRetryDelay() *durationpb.Duration }); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// forReason is the Disconnect of a session the hub closed for r; final is
// the status the engine's own rule gave, for hub.ReasonEnded and
// hub.ReasonNone; detail the hub's words for it (an admin's reason);
// retry is the hub's shutdown hint.
func forReason(r hub.CloseReason, detail string, final error, retry time.Duration) Disconnect {
	switch r {
	case hub.ReasonSlowConsumer:
		return Disconnect{Code: CodeSlowConsumer, Reason: r.String()}
	case hub.ReasonDisconnectedByAdmin:
		return Disconnect{Code: CodeAdmin, Reason: detail}
	case hub.ReasonShutdown:
		return Disconnect{Code: CodeUnavailable, Reason: r.String(), RetryAfter: retry}
	}
	return FromStatus(final)
}
