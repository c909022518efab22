package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// contractServices are the chat.v1 services the standalone proxy forwards.
var contractServices = []*grpc.ServiceDesc{&chatv1.Chat_ServiceDesc, &chatv1.Auth_ServiceDesc, &chatv1.Admin_ServiceDesc}

// rawMsg is one gRPC message in its wire form, passed through unparsed.
type rawMsg struct{ b []byte }

// rawCodec moves rawMsg bytes as they are; other proto messages are
// (un)marshalled as usual. Its name is "proto", so the content type on the
// wire stays application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *rawMsg:
		return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
	case proto.Message:
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return nil, fmt.Errorf("bridge: rawCodec cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *rawMsg:
		m.b = data.Materialize()
		return nil
	case proto.Message:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return proto.Unmarshal(buf.ReadOnlyData(), m)
	}
	return fmt.Errorf("bridge: rawCodec cannot unmarshal into %T", v)
}

// newProxyServer returns a grpc.Server, used only through ServeHTTP by
// improbable, that forwards every call to conn frame by frame. The remote
// server runs its interceptors; the proxy decodes nothing.
func newProxyServer(conn grpc.ClientConnInterface, log *slog.Logger) *grpc.Server {
	p := &proxy{conn: conn, log: log}
	return grpc.NewServer(
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler(p.handle),
	)
}

type proxy struct {
	conn grpc.ClientConnInterface
	log  *slog.Logger
}

var proxyStreamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func (p *proxy) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "bridge: no method on stream")
	}
	in, _ := metadata.FromIncomingContext(ss.Context())
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), outgoingMD(in)))
	defer cancel()

	cs, err := p.conn.NewStream(ctx, proxyStreamDesc, method, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return err
	}

	// Client to server, in its own goroutine; it ends when the client
	// half-closes, or when this call ends and ss's context with it.
	go func() {
		for {
			m := new(rawMsg)
			if err := ss.RecvMsg(m); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(m); err != nil {
				// io.EOF: the server ended the call; RecvMsg below
				// returns its status.
				return
			}
		}
	}()

	// Server to client, here.
	headerSent := false
	for {
		m := new(rawMsg)
		err := cs.RecvMsg(m)
		if !headerSent {
			if h, herr := cs.Header(); herr == nil && len(h) > 0 {
				_ = ss.SendHeader(h)
			}
			headerSent = true
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(m); err != nil {
			return err
		}
	}
}

// outgoingMD is the metadata forwarded to the remote server: what the
// gRPC-Web sanitizer let through, less transport headers that grpc-go sets
// itself.
func outgoingMD(in metadata.MD) metadata.MD {
	out := make(metadata.MD, len(in))
	for k, v := range in {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "user-agent" || k == "te" {
			continue
		}
		out[k] = v
	}
	return out
}
