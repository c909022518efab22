package bridge_test

import (
	"fmt"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"

	"github.com/parleychat/parley/bridge"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// BenchmarkDeliver measures the cost of one ServerEvent (a 100-byte text
// Message) delivered to a client: over native gRPC, and over /ws in
// protobuf and in JSON, where it crosses the bridge (gRPC over loopback to
// the bridge, re-framed, WebSocket over loopback to the client; the -pipe
// variants reach the gRPC server over net.Pipe, as parleyd's in-process
// connection does). ns/op and
// allocs/op are per delivered event and count both ends, the server, the
// bridge and the client, all in this process. Clients do not decode (the
// gRPC one receives raw bytes), so the figures are the cost of the path,
// not of a client's parser.
//
//	go test -run '^$' -bench BenchmarkDeliver -benchmem -benchtime 200000x ./bridge/
func BenchmarkDeliver(b *testing.B) {
	const text = 100
	flood := func(n int) *chatv1.ClientEvent { return say("f", "general", fmt.Sprintf("flood:%d:%d", n, text)) }

	b.Run("grpc", func(b *testing.B) {
		e := newEnv(b, inProcess, nil)
		ctx := metadata.AppendToOutgoingContext(testCtx(b), "authorization", "Bearer tok-bench")
		conn, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecureCreds()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		stream, err := conn.NewStream(ctx, &chatv1.Chat_ServiceDesc.Streams[0], chatv1.Chat_Connect_FullMethodName, grpc.ForceCodecV2(benchCodec{}))
		if err != nil {
			b.Fatal(err)
		}
		var m benchMsg
		if err := stream.RecvMsg(&m); err != nil { // Welcome
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		if err := stream.SendMsg(flood(b.N)); err != nil {
			b.Fatal(err)
		}
		for range b.N {
			if err := stream.RecvMsg(&m); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		_ = stream.CloseSend()
	})

	for _, v := range []struct {
		name   string
		format websocket.MessageType
		pipe   bool
	}{
		{"ws-binary", websocket.MessageBinary, false},
		{"ws-json", websocket.MessageText, false},
		{"ws-binary-pipe", websocket.MessageBinary, true},
		{"ws-json-pipe", websocket.MessageText, true},
	} {
		format := v.format
		b.Run(v.name, func(b *testing.B) {
			// The whole burst is queued at once: size the queue for it, so
			// that the figure is the path's cost, not the slow-consumer policy.
			e := newEnvWith(b, inProcess, v.pipe, func(c *bridge.Config) { c.SendQueue = b.N + 64 })
			ctx := testCtx(b)
			c := dialWS(b, ctx, e, wsOpts{})
			if err := c.Write(ctx, format, []byte(hello("bench"))); err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.Read(ctx); err != nil { // Welcome
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			if format == websocket.MessageBinary {
				writeBinaryEvent(b, ctx, c, flood(b.N))
			} else {
				writeJSONEvent(b, ctx, c, flood(b.N))
			}
			for range b.N {
				if _, _, err := c.Read(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			_ = c.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// benchMsg and benchCodec let the native client receive raw bytes.
type benchMsg struct{ b []byte }

type benchCodec struct{}

func (benchCodec) Name() string { return "proto" }

func (benchCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := protoMarshal(v)
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (benchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*benchMsg).b = data.Materialize()
	return nil
}
