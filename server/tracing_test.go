package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testenv"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/parleychat/parley/clients/go/parley"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/internal/tracing"
	"github.com/parleychat/parley/server/servertest"
)

// TestTraceAcrossNodes follows one message sent with the Go SDK on node A
// to its delivery on node B over NATS: every span from the SDK's send to
// B's fan-out is in the caller's trace, parented hop by hop, and the
// batch's commit span links to the message's append.
//
// Not parallel: the tracer provider is process-wide.
func TestTraceAcrossNodes(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.Install(tp)
	t.Cleanup(func() { tracing.Install(nil); _ = tp.Shutdown(context.Background()) })

	b := make([]byte, 6)
	rand.Read(b)
	subject := "parley.test.trace." + hex.EncodeToString(b)
	dir := t.TempDir() // one SQLite file, shared by both nodes
	node := func(c *server.Config) { c.NATSURL, c.NATSSubject = testenv.NATSURL(), subject }
	a := servertest.Start(t, servertest.Options{DataDir: dir, Configure: node})
	bn := servertest.Start(t, servertest.Options{DataDir: dir, Configure: node})

	bob := connect(t, bn.Dial(t), "bob@B", bn.Token(t, "bob", auth.RoleUser))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := parley.Dial(ctx, a.GRPCAddr(), parley.WithToken(a.Token(t, "alice", auth.RoleUser)), parley.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	sendCtx, root := tp.Tracer("test").Start(ctx, "test.send")
	if _, err := sess.Send(sendCtx, "general", "traced"); err != nil {
		t.Fatal(err)
	}
	root.End()
	bob.next(textIn("general", "traced"))
	traceID := root.SpanContext().TraceID()

	// B's fan-out span ends just after it queued the message to bob.
	var spans map[string][]tracetest.SpanStub
	for deadline := time.Now().Add(waitFor); ; {
		spans = map[string][]tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == traceID {
				spans[s.Name] = append(spans[s.Name], s)
			}
		}
		if len(spans["hub.fanout"]) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans of the message's trace: %v", names(spans))
		}
		time.Sleep(10 * time.Millisecond)
	}
	one := func(name string) tracetest.SpanStub {
		t.Helper()
		if len(spans[name]) != 1 {
			t.Fatalf("%d %q spans in the trace; all: %v", len(spans[name]), name, names(spans))
		}
		return spans[name][0]
	}
	send, cmd, appendSpan := one("parley.send_message"), one("chat.send_message"), one("store.append")
	pub, recv := one("nats.publish"), one("nats.receive")
	parentOf := func(child, parent tracetest.SpanStub) {
		t.Helper()
		if child.Parent.SpanID() != parent.SpanContext.SpanID() {
			t.Errorf("%s's parent is %s, want %s (%s)", child.Name, child.Parent.SpanID(), parent.SpanContext.SpanID(), parent.Name)
		}
	}
	parentOf(send, one("test.send"))
	parentOf(cmd, send)
	if send.SpanKind != trace.SpanKindClient || cmd.SpanKind != trace.SpanKindServer {
		t.Errorf("kinds: send %v, command %v", send.SpanKind, cmd.SpanKind)
	}
	parentOf(appendSpan, cmd)
	var local, remote tracetest.SpanStub
	for _, f := range spans["hub.fanout"] {
		if f.Parent.SpanID() == cmd.SpanContext.SpanID() {
			local = f
		} else {
			remote = f
		}
	}
	parentOf(local, cmd)
	parentOf(pub, local)
	parentOf(recv, pub)
	parentOf(remote, recv)

	// The commit is the batch's own trace, linked to each message's append.
	linked := false
	for _, s := range exp.GetSpans() {
		if s.Name != "store.commit" {
			continue
		}
		for _, l := range s.Links {
			linked = linked || l.SpanContext.SpanID() == appendSpan.SpanContext.SpanID()
		}
	}
	if !linked {
		t.Errorf("no store.commit span links to the message's store.append")
	}
}

func names(spans map[string][]tracetest.SpanStub) map[string]int {
	out := map[string]int{}
	for n, s := range spans {
		out[n] = len(s)
	}
	return out
}

// collector is an OTLP/gRPC trace receiver: what parleyd exports to.
type collector struct {
	coltrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string]string // span name -> service.name
}

func (c *collector) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans[s.GetName()] = service
			}
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// TestOTLPExport: with --otlp-endpoint (Config.OTLPEndpoint) or the
// standard environment variable, a command's spans reach the collector by
// the time the server has shut down; without either, nothing is exported.
//
// Not parallel: the tracer provider is process-wide.
func TestOTLPExport(t *testing.T) {
	for _, how := range []string{"config", "env", "off"} {
		t.Run(how, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			col := &collector{spans: map[string]string{}}
			gs := grpc.NewServer()
			coltrace.RegisterTraceServiceServer(gs, col)
			go gs.Serve(lis)
			defer gs.Stop()
			t.Cleanup(func() { tracing.Install(nil) })

			srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
				switch how {
				case "config":
					c.OTLPEndpoint = lis.Addr().String()
				case "env":
					t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())
				}
			}})
			alice := connect(t, srv.Dial(t), "alice", srv.Token(t, "alice", auth.RoleUser))
			alice.next(replyTo(alice.send(sendRoom("general", "exported", ""))))
			alice.close()
			srv.Stop() // flushes the exporter

			col.mu.Lock()
			defer col.mu.Unlock()
			if how == "off" {
				if len(col.spans) != 0 {
					t.Fatalf("exported without an endpoint: %v", col.spans)
				}
				return
			}
			for _, name := range []string{"chat.send_message", "store.append", "store.commit", "hub.fanout"} {
				if service, ok := col.spans[name]; !ok || service != "parleyd" {
					t.Errorf("span %q: exported %v, service %q; got %v", name, ok, service, col.spans)
				}
			}
		})
	}
}
