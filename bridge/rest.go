package bridge

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
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

// openAPI is the OpenAPI 2 document of the generated endpoints, made by
// protoc-gen-openapiv2 from the contract's google.api.http options (buf
// generate; `make check-generated` fails when it is stale).
//
//go:embed openapi/parley.swagger.json
var openAPI []byte

// apiJSON and apiJSONIn are /api's protojson: lowerCamelCase names, enums
// as names, int64 as strings; unknown fields refused.
var (
	apiJSON   = protojson.MarshalOptions{}
	apiJSONIn = protojson.UnmarshalOptions{DiscardUnknown: false}
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

// apiRoutes mounts /api. The unary endpoints are grpc-gateway's handlers,
// generated from the contract's google.api.http options, behind the
// bridge's own HTTP rules (b.api) and query checks; file transfer stays
// hand-written (files.go) because it streams raw bytes and multipart,
// which the gateway would turn into JSON-framed messages.
func (b *Bridge) apiRoutes(mux *http.ServeMux) {
	gw := b.newGateway()
	mux.Handle("GET /api/messages", b.api(maxEmptyBody, b.gateway(gw, historyQuery)))
	mux.Handle("GET /api/users/online", b.api(maxEmptyBody, b.gateway(gw, pageQuery(onlineMaxPageSize, onlineMaxPageToken, 100))))
	mux.Handle("GET /api/rooms", b.api(maxEmptyBody, b.gateway(gw, nil)))
	mux.Handle("GET /api/conversations", b.api(maxEmptyBody, b.gateway(gw, pageQuery(conversationsMaxPageSize, conversationsMaxPageToken, 50))))
	mux.Handle("POST /api/auth/{op}", b.api(maxJSONBody, b.gateway(gw, nil)))
	mux.Handle("GET /api/openapi.json", b.api(maxEmptyBody, serveOpenAPI))
	mux.Handle("GET /api/files/{id}", b.api(maxEmptyBody, b.getFile))
	mux.Handle("POST /api/files", b.api(b.cfg.MaxUploadBytes+multipartSlack, b.postFile))
	mux.Handle("OPTIONS /api/", b.api(maxEmptyBody, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
}

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
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

// newGateway returns the grpc-gateway mux of Chat's and Auth's unary
// calls over Conn. Its answers follow /api's rules: protojson, errors as
// {"code","message"} (writeStatus), no gateway-specific headers, unknown
// paths as apiNotFound.
func (b *Bridge) newGateway() *runtime.ServeMux {
	none := func(string) (string, bool) { return "", false }
	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &apiMarshaler{runtime.JSONPb{MarshalOptions: apiJSON, UnmarshalOptions: apiJSONIn}}),
		runtime.WithIncomingHeaderMatcher(none),
		runtime.WithOutgoingHeaderMatcher(none),
		runtime.WithOutgoingTrailerMatcher(none),
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithDisablePathLengthFallback(),
		runtime.WithErrorHandler(func(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, _ *http.Request, err error) {
			var trailer metadata.MD
			if md, ok := runtime.ServerMetadataFromContext(ctx); ok {
				trailer = md.TrailerMD
			}
			b.writeStatus(w, status.Convert(err), trailer)
		}),
		runtime.WithRoutingErrorHandler(func(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, _ int) {
			b.apiNotFound(w, r)
		}),
	)
	conn := callConn{b.cfg.Conn}
	// Register*HandlerClient only adds routes: it never fails.
	_ = chatv1.RegisterChatHandlerClient(context.Background(), gw, chatv1.NewChatClient(conn))
	_ = chatv1.RegisterAuthHandlerClient(context.Background(), gw, chatv1.NewAuthClient(conn))
	return gw
}

// queryRewrite checks an endpoint's query parameters the way /api always
// has (with its own messages, before any call) and rewrites them into the
// field paths the gateway reads. A nil queryRewrite passes the query on.
type queryRewrite func(url.Values) (url.Values, error)

// gateway serves r with gw. The gateway sees only the method, the
// (rewritten) URL and a POST's body, read here within the body limit: the
// metadata of the call is what callContext gives every /api call (the
// Authorization header and the client's address), never other headers.
func (b *Bridge) gateway(gw *runtime.ServeMux, rewrite queryRewrite) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u := *r.URL
		if rewrite != nil {
			q, err := rewrite(u.Query())
			if err != nil {
				writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", err.Error())
				return
			}
			u.RawQuery = q.Encode()
		}
		var body []byte
		if r.Method == http.MethodPost {
			var err error
			if body, err = io.ReadAll(r.Body); err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					writeJSONError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", "body too large")
				} else {
					writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "cannot read body")
				}
				return
			}
		}
		ctx, cancel := b.callContext(r, restTimeout)
		defer cancel()
		md, _ := metadata.FromOutgoingContext(ctx)
		ctx = context.WithValue(ctx, callMDKey{}, md)

		gr := r.WithContext(ctx)
		gr.URL = &u
		gr.Header = http.Header{}
		gr.Form, gr.PostForm = nil, nil
		gr.Body = io.NopCloser(bytes.NewReader(body))
		gr.ContentLength = int64(len(body))
		if gr.Method == http.MethodHead {
			gr.Method = http.MethodGet // as http.ServeMux routes it
		}
		gw.ServeHTTP(w, gr)
	}
}

// callMDKey carries, in a gateway request's context, the metadata
// callContext made for it.
type callMDKey struct{}

// callConn is Conn as the gateway calls it: each call's outgoing metadata
// is replaced by the request's callContext metadata, so what the gateway
// would forward on its own (X-Forwarded-For, X-Forwarded-Host, headers it
// matches) never reaches the server, and a client cannot set the address
// the server trusts.
type callConn struct{ grpc.ClientConnInterface }

func (c callConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	md, _ := ctx.Value(callMDKey{}).(metadata.MD)
	return c.ClientConnInterface.Invoke(metadata.NewOutgoingContext(ctx, md), method, args, reply, opts...)
}

func (c callConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	md, _ := ctx.Value(callMDKey{}).(metadata.MD)
	return c.ClientConnInterface.NewStream(metadata.NewOutgoingContext(ctx, md), desc, method, opts...)
}

// apiMarshaler is protojson for the gateway, with /api's stricter body
// decoding: the whole body must be one JSON object (nothing after it, an
// empty body refused), as before the gateway.
type apiMarshaler struct{ runtime.JSONPb }

func (m *apiMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		msg, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("cannot decode into %T", v)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			return errors.New("cannot read body")
		}
		if err := m.UnmarshalOptions.Unmarshal(body, msg); err != nil {
			return errors.New("malformed JSON: " + err.Error())
		}
		return nil
	})
}

// historyQuery checks GET /api/messages?room=NAME|user=PEER[&before_seq=N]
// [&after_seq=N][&limit=N] and names the conversation by its field path
// (conversation.room, conversation.user), with limit 100 by default.
func historyQuery(q url.Values) (url.Values, error) {
	switch {
	case q.Has("room") && q.Has("user"):
		return nil, errors.New("give one of room or user, not both")
	case q.Has("room"):
		q.Set("conversation.room", q.Get("room"))
	case q.Has("user"):
		q.Set("conversation.user", q.Get("user"))
	}
	q.Del("room")
	q.Del("user")
	if err := setInt(q, "before_seq", 0, math.MaxInt64); err != nil {
		return nil, err
	}
	// after_seq counts by presence: after_seq=0 reads from the start, no
	// after_seq the latest page. An empty value is neither, so it is
	// refused rather than read as one of them.
	if q.Has("after_seq") {
		if q.Get("after_seq") == "" {
			return nil, errors.New("after_seq: empty: give a sequence number (0 for the start), or leave after_seq out for the latest page")
		}
		if err := setInt(q, "after_seq", 0, math.MaxInt64); err != nil {
			return nil, err
		}
	}
	if q.Get("limit") == "" {
		q.Set("limit", strconv.Itoa(historyDefaultLimit))
	} else if err := setInt(q, "limit", math.MinInt32, math.MaxInt32); err != nil {
		return nil, err // the server validates the range (at most 100)
	}
	return q, nil
}

// pageQuery checks page_size (1 to maxSize, defaultSize when 0 or left
// out) and page_token (a previous answer's nextPageToken) of a paged list.
func pageQuery(maxSize int64, maxToken, defaultSize int) queryRewrite {
	return func(q url.Values) (url.Values, error) {
		if err := setInt(q, "page_size", 0, maxSize); err != nil {
			return nil, fmt.Errorf("%w: give an integer from 1 to %d (default %d)", err, maxSize, defaultSize)
		}
		if q.Has("page_token") {
			if len(q.Get("page_token")) > maxToken {
				return nil, errors.New("page_token: too long: pass back a nextPageToken unchanged")
			}
			q.Set("page_token", q.Get("page_token"))
		}
		return q, nil
	}
}

// setInt checks the first value of q's key as an integer in [lo, hi] and
// leaves it as the only value, or removes the key when it is empty (0).
func setInt(q url.Values, key string, lo, hi int64) error {
	v := q.Get(key)
	n, err := queryInt(v, lo, hi)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if v == "" {
		q.Del(key)
		return nil
	}
	q.Set(key, strconv.FormatInt(n, 10))
	return nil
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

// writeResult answers a hand-written endpoint's call (files.go) as the
// gateway answers the others.
func (b *Bridge) writeResult(w http.ResponseWriter, resp proto.Message, err error, trailer metadata.MD) {
	if err != nil {
		b.writeStatus(w, status.Convert(err), trailer)
		return
	}
	out, err := apiJSON.Marshal(resp)
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
