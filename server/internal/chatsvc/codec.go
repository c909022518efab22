package chatsvc

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/parleychat/parley/server/internal/hub"
)

// Codec is the server's gRPC codec: the protobuf codec, except that a
// *hub.Frame (an event the hub already encoded once for every recipient) is
// written as its bytes, so fan-out never marshals per connection.
type Codec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*hub.Frame); ok {
		// SliceBuffer's Free is a no-op, so the shared bytes are never
		// recycled while another session still holds them.
		return mem.BufferSlice{mem.SliceBuffer(f.Data)}, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error { return protoCodec.Unmarshal(data, v) }

// Name implements encoding.CodecV2; it replaces "proto" on this server.
func (Codec) Name() string { return proto.Name }
