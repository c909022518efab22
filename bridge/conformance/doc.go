// Package conformance holds the bridge's transport conformance suite (in
// its tests): the same scripted chat scenarios run against a real parleyd
// (server/servertest) over native gRPC, gRPC-Web's WebSocket transport,
// /ws in JSON and /ws in protobuf, and each client must see the same
// normalized event sequence on every transport.
package conformance
