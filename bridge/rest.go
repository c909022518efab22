package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

const (
	// restTimeout bounds one unary call made for /api.
	restTimeout = 30 * time.Second
	// maxJSONBody bounds the JSON bodies of /api/auth/*.
	maxJSONBody = 16 << 10
	// maxEmptyBody bounds the (unused) bodies of the GET endpoints.
	maxEmptyBody = 1 << 10
	// historyDefaultLimit is the page size of GET /api/messages.
	historyDefaultLimit = 100
	// onlineMaxPageSize and onlineMaxPageToken bound GET /api/users/online's
	// page_size and page_token, as chat.v1.ListOnlineUsersRequest does.
	onlineMaxPageSize  = 1000
	onlineMaxPageToken = 128
	// conversationsMaxPageSize and conversationsMaxPageToken bound GET
	// /api/conversations' page_size and page_token, as
	// chat.v1.ListConversationsRequest does.
	conversationsMaxPageSize  = 200
	conversationsMaxPageToken = 256
)

// urlTokenParams are query parameters that would put a credential in a URL
// (and so in logs and Referer headers); requests carrying one are refused.
var urlTokenParams = []string{"token", "access_token", "authorization", "bearer", "jwt"}

// refuseTokenInURL answers 400 and reports true when r carries a token in
// its query string.
func refuseTokenInURL(w http.ResponseWriter, r *http.Request) bool {
	for k := range r.URL.Query() {
		for _, p := range urlTokenParams {
			if strings.EqualFold(k, p) {
				writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT",
					"tokens are not accepted in the URL (query parameter "+strconv.Quote(k)+"): send `Authorization: Bearer <token>`, "+
						"or on /ws the first frame {\"authorization\":\"Bearer <token>\"} or the Sec-WebSocket-Protocol \"parley.v1, bearer.<token>\"")
				return true
			}
		}
	}
	return false
}

func (b *Bridge) apiRoutes(mux *http.ServeMux) {
	mux.Handle("GET /api/messages", b.api(maxEmptyBody, b.getMessages))
	mux.Handle("GET /api/users/online", b.api(maxEmptyBody, b.getOnlineUsers))
	mux.Handle("GET /api/rooms", b.api(maxEmptyBody, b.getRooms))
	mux.Handle("GET /api/conversations", b.api(maxEmptyBody, b.getConversations))
	mux.Handle("GET /api/files/{id}", b.api(maxEmptyBody, b.getFile))
	mux.Handle("POST /api/files", b.api(b.cfg.MaxUploadBytes+multipartSlack, b.postFile))
	mux.Handle("POST /api/auth/{op}", b.api(maxJSONBody, b.postAuth))
	mux.Handle("OPTIONS /api/", b.api(maxEmptyBody, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
}

func (b *Bridge) apiNotFound(w http.ResponseWriter, r *http.Request) {
	writeJSONError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint: "+r.Method+" "+r.URL.Path)
}

// api wraps an /api handler: no token in the URL, origin allow-list with
// CORS for listed origins, a body limit, and headers for every answer.
func (b *Bridge) api(maxBody int64, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Cache-Control", "no-store")
		if refuseTokenInURL(w, r) {
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" || len(r.Header.Values("Origin")) > 0 {
			if !b.origins.allows(origin) {
				origin = originOf(r)
				b.refusals.refused(r, "rest", origin)
				writeJSONError(w, http.StatusForbidden, "PERMISSION_DENIED", originRefusal(origin))
				return
			}
			hdr.Set("Access-Control-Allow-Origin", origin)
			hdr.Add("Vary", "Origin")
			hdr.Set("Access-Control-Expose-Headers", "Retry-After, Content-Disposition, Content-Length")
			if r.Method == http.MethodOptions {
				hdr.Set("Access-Control-Allow-Methods", "GET, POST")
				hdr.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-File-Name, X-File-Size")
				hdr.Set("Access-Control-Max-Age", "600")
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r)
	})
}

// callContext carries the caller's bearer token (from the Authorization
// header only) and address to the gRPC server.
func (b *Bridge) callContext(r *http.Request, timeout time.Duration) (context.Context, context.CancelFunc) {
	md := metadata.Pairs(b.cfg.ClientIPHeader, remoteIP(r))
	if auth := r.Header.Get("Authorization"); auth != "" && printableASCII(auth) {
		md.Set("authorization", auth)
	}
	ctx := metadata.NewOutgoingContext(r.Context(), md)
	if timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, timeout)
}

func (b *Bridge) chat() chatv1.ChatClient { return chatv1.NewChatClient(b.cfg.Conn) }

func (b *Bridge) getMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := &chatv1.GetHistoryRequest{Limit: historyDefaultLimit}
	room, user := q.Get("room"), q.Get("user")
	switch {
	case q.Has("room") && q.Has("user"):
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "give one of room or user, not both")
		return
	case q.Has("room"):
		req.Conversation = &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: room}}
	case q.Has("user"):
		req.Conversation = &chatv1.Conversation{Kind: &chatv1.Conversation_User{User: user}}
	}
	var err error
	if req.BeforeSeq, err = queryInt(q.Get("before_seq"), 0, math.MaxInt64); err != nil {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "before_seq: "+err.Error())
		return
	}
	// after_seq counts by presence: after_seq=0 reads from the start, no
	// after_seq the latest page. An empty value is neither, so it is
	// refused rather than read as one of them.
	if q.Has("after_seq") {
		v := q.Get("after_seq")
		after, err := queryInt(v, 0, math.MaxInt64)
		if err == nil && v == "" {
			err = errors.New("empty: give a sequence number (0 for the start), or leave after_seq out for the latest page")
		}
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "after_seq: "+err.Error())
			return
		}
		req.AfterSeq = &after
	}
	if v := q.Get("limit"); v != "" {
		n, err := queryInt(v, math.MinInt32, math.MaxInt32)
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "limit: "+err.Error())
			return
		}
		req.Limit = int32(n) // the server validates the range (at most 100)
	}
	ctx, cancel := b.callContext(r, restTimeout)
	defer cancel()
	var trailer metadata.MD
	resp, err := b.chat().GetHistory(ctx, req, grpc.Trailer(&trailer))
	b.writeResult(w, resp, err, trailer)
}

// getOnlineUsers pages Chat.ListOnlineUsers: page_size (default 100, at
// most 1000) and page_token (a previous answer's nextPageToken).
func (b *Bridge) getOnlineUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := &chatv1.ListOnlineUsersRequest{PageToken: q.Get("page_token")}
	size, err := queryInt(q.Get("page_size"), 0, onlineMaxPageSize)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT",
			"page_size: "+err.Error()+": give an integer from 1 to "+strconv.Itoa(onlineMaxPageSize)+" (default 100)")
		return
	}
	req.PageSize = int32(size)
	if len(req.PageToken) > onlineMaxPageToken {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "page_token: too long: pass back a nextPageToken unchanged")
		return
	}
	ctx, cancel := b.callContext(r, restTimeout)
	defer cancel()
	var trailer metadata.MD
	resp, err := b.chat().ListOnlineUsers(ctx, req, grpc.Trailer(&trailer))
	b.writeResult(w, resp, err, trailer)
}

func (b *Bridge) getRooms(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := b.callContext(r, restTimeout)
	defer cancel()
	var trailer metadata.MD
	resp, err := b.chat().ListRooms(ctx, &chatv1.ListRoomsRequest{}, grpc.Trailer(&trailer))
	b.writeResult(w, resp, err, trailer)
}

// getConversations pages Chat.ListConversations: page_size (default 50, at
// most 200) and page_token (a previous answer's nextPageToken).
func (b *Bridge) getConversations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := &chatv1.ListConversationsRequest{PageToken: q.Get("page_token")}
	size, err := queryInt(q.Get("page_size"), 0, conversationsMaxPageSize)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT",
			"page_size: "+err.Error()+": give an integer from 1 to "+strconv.Itoa(conversationsMaxPageSize)+" (default 50)")
		return
	}
	req.PageSize = int32(size)
	if len(req.PageToken) > conversationsMaxPageToken {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "page_token: too long: pass back a nextPageToken unchanged")
		return
	}
	ctx, cancel := b.callContext(r, restTimeout)
	defer cancel()
	var trailer metadata.MD
	resp, err := b.chat().ListConversations(ctx, req, grpc.Trailer(&trailer))
	b.writeResult(w, resp, err, trailer)
}

// postAuth maps POST /api/auth/{register,login,refresh,logout} to chat.v1.Auth.
func (b *Bridge) postAuth(w http.ResponseWriter, r *http.Request) {
	auth := chatv1.NewAuthClient(b.cfg.Conn)
	var (
		req  proto.Message
		call func(context.Context, ...grpc.CallOption) (proto.Message, error)
	)
	switch r.PathValue("op") {
	case "register":
		m := new(chatv1.RegisterRequest)
		req, call = m, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return auth.Register(ctx, m, o...)
		}
	case "login":
		m := new(chatv1.LoginRequest)
		req, call = m, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return auth.Login(ctx, m, o...)
		}
	case "refresh":
		m := new(chatv1.RefreshRequest)
		req, call = m, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return auth.Refresh(ctx, m, o...)
		}
	case "logout":
		m := new(chatv1.LogoutRequest)
		req, call = m, func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return auth.Logout(ctx, m, o...)
		}
	default:
		b.apiNotFound(w, r)
		return
	}
	if !readJSONBody(w, r, req) {
		return
	}
	ctx, cancel := b.callContext(r, restTimeout)
	defer cancel()
	var trailer metadata.MD
	resp, err := call(ctx, grpc.Trailer(&trailer))
	b.writeResult(w, resp, err, trailer)
}

// readJSONBody decodes a protojson body into m, answering 4xx on failure.
func readJSONBody(w http.ResponseWriter, r *http.Request, m proto.Message) bool {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSONError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", "body too large")
		} else {
			writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "cannot read body")
		}
		return false
	}
	if err := jsonIn.Unmarshal(body, m); err != nil {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "malformed JSON: "+err.Error())
		return false
	}
	return true
}

func (b *Bridge) writeResult(w http.ResponseWriter, resp proto.Message, err error, trailer metadata.MD) {
	if err != nil {
		b.writeStatus(w, status.Convert(err), trailer)
		return
	}
	out, err := jsonOut.Marshal(resp)
	if err != nil {
		b.log.Error("api: cannot encode response", "err", err)
		writeJSONError(w, http.StatusInternalServerError, "INTERNAL", "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// HTTPStatus maps a gRPC code to the HTTP status /api answers with:
//
//	Unauthenticated 401, PermissionDenied 403, NotFound 404,
//	InvalidArgument and FailedPrecondition 400, AlreadyExists 409,
//	ResourceExhausted 429 (with Retry-After), Unavailable 503,
//	DeadlineExceeded 504, anything else 500.
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.AlreadyExists:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func (b *Bridge) writeStatus(w http.ResponseWriter, st *status.Status, trailer metadata.MD) {
	code := HTTPStatus(st.Code())
	switch st.Code() {
	case codes.Unauthenticated:
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
	case codes.ResourceExhausted, codes.Unavailable:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(st, trailer)))
	}
	if code == http.StatusInternalServerError {
		b.log.Warn("api: call failed", "code", st.Code().String(), "msg", st.Message())
	}
	writeJSONError(w, code, codeName(st.Code()), st.Message())
}

// retryAfterSeconds reads a google.rpc.RetryInfo detail, or a
// "retry-after" trailer in seconds; at least 1.
func retryAfterSeconds(st *status.Status, trailer metadata.MD) int {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return max(1, int(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds())))
		}
	}
	if v := trailer.Get("retry-after"); len(v) > 0 {
		if n, err := strconv.Atoi(v[0]); err == nil && n > 0 {
			return n
		}
		if d, err := time.ParseDuration(v[0]); err == nil && d > 0 {
			return max(1, int(math.Ceil(d.Seconds())))
		}
	}
	return 1
}

// codeName is the canonical upper-snake name of c, e.g. "NOT_FOUND".
func codeName(c codes.Code) string {
	if c == codes.Canceled {
		return "CANCELLED"
	}
	s := c.String()
	var out strings.Builder
	for i, r := range s {
		if i > 0 && unicode.IsUpper(r) && unicode.IsLower(rune(s[i-1])) {
			out.WriteByte('_')
		}
		out.WriteRune(unicode.ToUpper(r))
	}
	return out.String()
}

// apiError is the body of every /api error.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSONError(w http.ResponseWriter, httpStatus int, code, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	h.Del("Content-Disposition")
	w.WriteHeader(httpStatus)
	_ = json.NewEncoder(w).Encode(apiError{Code: code, Message: msg})
}

func queryInt(v string, lo, hi int64) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, errors.New("not an integer")
	}
	if n < lo || n > hi {
		return 0, errors.New("out of range")
	}
	return n, nil
}
