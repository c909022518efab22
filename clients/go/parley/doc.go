// Package parley is the Go SDK for a Parley chat server.
//
// A [Client] is one gRPC connection with credentials. It makes the unary
// calls (auth, history, rooms, files, admin) and opens live sessions:
//
//   - [Client.Connect] opens one Connect stream as a [Session]: events arrive
//     on [Session.Events]; commands such as [Session.Send] and [Session.Join]
//     wait for the server's answer, matched by request id, and return an
//     in-band refusal as an [*Error].
//   - [Client.ConnectResilient] opens a [ResilientSession], which reconnects
//     with backoff when the stream is lost, resumes every conversation from
//     the last sequence it saw, and drops messages it already delivered.
//
// Order: a ResilientSession keeps a cursor per conversation (the last seq
// delivered with none missing before it). A live message that jumps past
// it (seq > last+1) is held while the missing messages are read with
// [Client.History]; they are delivered first, as one RecentMessages event,
// then the live one, on the same session. A message at or below the cursor
// is a duplicate and dropped. So each conversation comes in seq order,
// once, unless history cannot supply the missing messages: then they
// follow later by Resume (see [ResilientSession] for the exact rules). A
// plain Session keeps no cursors and passes on what the server sends.
//
// Credentials come from [WithToken], [WithTokenSource] or [WithAutoRefresh];
// with the last, the client trades its refresh token before the access token
// expires and hands each new access token to its live sessions in band, so a
// session outlives the token it was opened with.
//
// Concurrency: Client, Session and ResilientSession are safe for concurrent
// use. Each Session has one reader goroutine (the only caller of Recv) and
// one writer goroutine (the only caller of Send); Close ends both.
//
// Errors: unary calls and a session's end return gRPC status errors; a
// command refused inside a live session returns an [*Error]. [CodeOf] gives
// a chat.v1 ErrorCode for either.
package parley
