package parley

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/reflect/protoreflect"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// tracerName is the instrumentation scope of the SDK's spans.
const tracerName = "github.com/parleychat/parley/clients/go/parley"

// WithTracerProvider traces each session command (Send, Join, ...) with a
// client span from tp, and hands its W3C trace context to the server on
// the command itself (ClientEvent.trace_parent and trace_state), so the
// server's spans for it, through the commit and the fan-out on every
// node, join the caller's trace. The default is OpenTelemetry's global
// provider (otel.GetTracerProvider), which records nothing until the
// application installs one; a command under a context that already holds
// a span carries that span's context either way.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp }
}

func (o options) tracerOf() trace.Tracer {
	tp := o.tracer
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(tracerName)
}

var (
	eventOneof = (&chatv1.ClientEvent{}).ProtoReflect().Descriptor().Oneofs().ByName("event")
	spanNames  = func() map[protoreflect.Name]string {
		m := map[protoreflect.Name]string{}
		fields := eventOneof.Fields()
		for i := range fields.Len() {
			m[fields.Get(i).Name()] = "parley." + string(fields.Get(i).Name())
		}
		return m
	}()
)

// traceCommand starts ev's client span and writes its trace context into
// ev; end it with the command's outcome.
func (s *Session) traceCommand(ctx context.Context, ev *chatv1.ClientEvent) (context.Context, trace.Span) {
	name := "parley.command"
	if fd := ev.ProtoReflect().WhichOneof(eventOneof); fd != nil {
		name = spanNames[fd.Name()]
	}
	ctx, span := s.c.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	if span.SpanContext().IsValid() {
		c := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, c)
		ev.TraceParent, ev.TraceState = c["traceparent"], c["tracestate"]
	}
	return ctx, span
}

// endSpan ends a command's span with its error, if any.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
