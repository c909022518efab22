// Package bridge puts Parley's gRPC API on one HTTP listener for browsers
// and simple clients: gRPC-Web (improbable-eng/grpc-web, including its
// WebSocket transport for the bidirectional Chat.Connect), a plain
// WebSocket endpoint /ws, a small REST JSON API under /api, and the web
// app at "/".
//
// # No policy here
//
// Every path ends in a call to the gRPC server, so the server's
// interceptor chain (auth, roles, rate limits, validation) decides
// everything: the bridge never verifies a token or applies a limit of the
// chat's own. It owns only transport rules: the origin allow-list, frame
// and body sizes, pings, first-frame and per-chunk timeouts, the /ws send
// queue, and refusing tokens in URLs (400). It forwards the caller's
// `authorization` and sets Config.ClientIPHeader to the TCP peer's address
// (http.Request.RemoteAddr); any value the client sent for that header, or
// for X-Forwarded-For, X-Real-IP, Forwarded and the like, is dropped.
//
// # gRPC-Web
//
// Requests are recognised by content type (application/grpc-web*), by the
// "grpc-websockets" subprotocol, or as CORS pre-flights naming
// x-grpc-web. With Config.GRPCServer set they are served by that server
// (grpc.Server.ServeHTTP), so its interceptors and message-size limits
// apply unchanged; without it, by a proxy that forwards each call's frames
// over Config.Conn undecoded. Options: origin allow-list for CORS and
// WebSocket upgrades (403 otherwise), CORS only for the chat.v1 methods,
// WebSocket pings every PingInterval, read limit MaxFrameBytes. Only
// authorization, content-type, grpc-timeout, grpc-encoding,
// grpc-accept-encoding, x-grpc-web, x-user-agent, user-agent and te reach
// the server, whether they came as HTTP headers or in the WebSocket header
// frame. The header frame must arrive within 10s. With Config.Sessions
// set, the WebSocket transport's Chat.Connect is attached to the server's
// sessions directly (like /ws): its header frame gives the authorization
// and grpc-timeout (the call's deadline, as on a gRPC server: when it
// passes the session ends with DEADLINE_EXCEEDED); a broken header frame
// or client message ends the call with a status in its trailers, and a
// message over MaxFrameBytes ends it with INVALID_ARGUMENT naming the
// limit, then closes with 1009. A browser that goes away
// ends the call: a close or read error cancels the stream, and on Linux
// TCP_USER_TIMEOUT (2 x PingInterval) makes the kernel drop a peer that
// stops acknowledging, which the pings guarantee is noticed.
//
// # /ws protocol
//
// With Config.Sessions set (as parleyd sets it), a /ws connection is
// attached to the server's session engine directly (session.Attacher;
// this package implements its session.Transport): the server runs the
// same policy gate as for a gRPC stream, but without an HTTP/2
// hop, and binary frames go out exactly as the hub encoded them, once for
// all recipients. Without it (a standalone bridge), the bridge opens
// Chat.Connect over Config.Conn. Clients cannot tell the two apart; the
// conformance suite checks that.
//
// One WebSocket is one Chat.Connect stream. Client to server:
//
//   - Authenticate with the subprotocols "parley.v1, bearer.<access JWT>"
//     (the bridge echoes only "parley.v1"; a bearer without parley.v1 gets
//     400), or with a first frame {"authorization":"Bearer <access JWT>"}.
//     Not both (4400). Without a token the call still reaches the server,
//     which refuses it (4401).
//   - The first frame fixes the connection's format for everything the
//     server sends: a TEXT first frame means protojson text frames, a
//     BINARY one means protobuf binary frames. The first frame is either a
//     hello (a JSON object whose only key is "authorization", e.g. `{}`
//     when the token came in the subprotocol; a binary frame may carry the
//     same JSON) or the first ClientEvent. The server sends nothing, not
//     even Welcome, before that frame, and closes with 4408 if it does not
//     come within 10s.
//   - Every later frame is one ClientEvent: text frames in protojson,
//     binary frames in protobuf (each frame is decoded by its own type).
//     JSON input accepts lowerCamelCase and proto field names; unknown
//     fields are errors.
//
// Server to client, each frame is one ServerEvent: protojson with the
// default options (lowerCamelCase names, enums by name, int64 as strings,
// zero values omitted), or protobuf as the server encoded it. A frame that
// does not decode is answered in band with an Error event
// (ERROR_CODE_INVALID_ARGUMENT, "malformed JSON: ..." or "malformed
// protobuf: ...", with the request id when one can be read) and the
// connection lives on. A message over MaxFrameBytes closes with 1009; a
// frame that breaks RFC 6455 (unmasked, reserved bits or an unknown
// opcode, a fragmented or oversized control frame, a bad close code)
// closes with 1002. No extension is negotiated (no compression); messages
// may be fragmented. The handshake and the frames are the bridge's own
// (wsConn): an idle connection then costs a few hundred bytes besides its
// session, not a WebSocket library's connection state. A session the
// server ends sends a Disconnect event last, and the close carries its
// code and reason; otherwise the stream's final status becomes the close
// code and reason; see CloseCode for the table. The bridge pings every
// PingInterval and ends a session whose pong does not come within another
// PingInterval. Events wait in a queue of SendQueue; a client that lets it
// fill is closed with 1008 "slow consumer", and its Connect stream is
// cancelled. A proxied session the bridge ends itself while its stream is
// open (that slow consumer, or Close: 1001) gets the Disconnect event of
// the same code first, best effort, as the server's sessions do.
//
// # REST
//
//	GET  /api/messages?room=NAME|user=PEER[&before_seq=N][&after_seq=N][&limit=N]  Chat.GetHistory (limit 100 by default)
//	GET  /api/users/online[?page_size=N][&page_token=T]  Chat.ListOnlineUsers (100 by default, at most 1000; T is the last answer's nextPageToken)
//	GET  /api/rooms                              Chat.ListRooms (every room: memberCount stored, onlineCount online)
//	GET  /api/conversations[?page_size=N][&page_token=T]  Chat.ListConversations (50 by default, at most 200; T is the last answer's nextPageToken)
//	GET  /api/files/{id}                         Chat.DownloadFile, streamed as an attachment
//	POST /api/files                              Chat.UploadFile in 64 KiB chunks (see postFile)
//	POST /api/auth/{register,login,refresh,logout}  chat.v1.Auth, protojson bodies
//	GET  /api/openapi.json                       the OpenAPI 2 document of the generated endpoints
//
// Every endpoint but files is grpc-gateway's handler, generated from the
// contract's google.api.http options, behind the bridge's rules and query
// checks; it calls Conn with the same metadata as the hand-written file
// endpoints (the Authorization header and the peer's address, nothing
// the gateway would forward on its own).
// Tokens come only from the Authorization header. Responses are the
// protojson of the chat.v1 response; errors are {"code": "NOT_FOUND",
// "message": "..."} with the status of HTTPStatus (429 carries
// Retry-After from a google.rpc.RetryInfo detail or a retry-after trailer).
// Bodies are bounded: 1 KiB for GETs, 16 KiB for auth, MaxUploadBytes for
// files. Browser requests must come from an allowed origin, which also
// gets CORS headers.
//
// # Concurrency
//
// A Bridge and its Handler are safe for concurrent use. Each /ws
// connection runs on its own goroutine (the HTTP handler returns after the
// upgrade), which reads the first frame. Attached to the server's sessions
// (Config.Sessions), it then exits: the session reads on a goroutine of
// its own, and writes from one that exists only while frames wait,
// framing events straight into the connection's write buffer and writing
// a burst with one syscall: one goroutine per idle connection. Proxied over gRPC, one
// goroutine receives from the stream into the bounded queue without ever
// blocking and one writer drains it. Pings and the first-frame deadline
// are timers. The first to see the end records the close code and closes
// the WebSocket, which ends every blocked read and write and cancels the
// stream. Close ends every /ws session with 1001.
package bridge
