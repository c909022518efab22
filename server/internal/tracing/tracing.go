// Package tracing sets parleyd's OpenTelemetry tracing up and carries W3C
// trace context where gRPC metadata cannot: on each ClientEvent of a
// Connect stream (trace_parent, trace_state), and on the hub's cluster
// envelopes over NATS. One message can then be followed from the client's
// send, through the server's command, the store's group commit (its span
// links to every message it carried) and NATS, to the fan-out on every
// node.
//
// Tracing is off unless an OTLP endpoint is configured (Config.Endpoint,
// or the standard OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Off, Start costs nothing for a
// command that carries no trace context: it hands back the context's own
// (no-op) span without allocating.
//
// Concurrency: every function is safe for concurrent use. The tracer
// provider is process-wide (otel's global), as OpenTelemetry intends.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Name is the instrumentation scope of parleyd's own spans.
const Name = "github.com/parleychat/parley/server"

var enabled atomic.Bool

// Install makes tp the process's tracer provider and turns span creation
// on even for commands without trace context; nil turns it off again
// (a no-op provider). Setup calls it; tests call it with an SDK provider
// and an in-memory exporter.
func Install(tp trace.TracerProvider) {
	if tp == nil {
		enabled.Store(false)
		otel.SetTracerProvider(noop.NewTracerProvider())
		return
	}
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	enabled.Store(true)
}

// Config configures Setup.
type Config struct {
	// Endpoint is the OTLP/gRPC collector, as a URL ("http://host:4317"
	// for plaintext, "https://host:4317" for TLS) or a bare "host:port"
	// (plaintext). Empty means the OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
	// OTEL_EXPORTER_OTLP_ENDPOINT environment variable, and tracing is off
	// when neither is set. The exporter's other OTEL_EXPORTER_OTLP_*
	// variables (headers, timeout, certificate) and OTEL_TRACES_SAMPLER
	// apply as documented by OpenTelemetry.
	Endpoint string
	// ServiceName is the service.name resource attribute; default
	// "parleyd". OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override.
	ServiceName string
	// NodeID becomes the service.instance.id attribute.
	NodeID string
}

// Setup installs an OTLP exporter when one is configured and returns the
// function that flushes and stops it (a no-op when tracing is off).
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	nop := func(context.Context) error { return nil }
	var opts []otlptracegrpc.Option
	switch e := cfg.Endpoint; {
	case e == "":
		if os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
			return nop, nil
		}
	case strings.Contains(e, "://"):
		opts = append(opts, otlptracegrpc.WithEndpointURL(e))
	default:
		opts = append(opts, otlptracegrpc.WithEndpoint(e), otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nop, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	name := cfg.ServiceName
	if name == "" {
		name = "parleyd"
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(name), semconv.ServiceInstanceID(cfg.NodeID)))
	if err != nil {
		res = resource.Default()
	}
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	Install(tp)
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return errors.Join(tp.Shutdown(ctx))
	}, nil
}

// Enabled reports whether a tracer provider is installed (Install).
func Enabled() bool { return enabled.Load() }

// Start starts a span named name under ctx's span. With tracing off and
// no trace context in ctx it returns ctx and its no-op span, for free.
func Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !enabled.Load() && !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(ctx)
	}
	return otel.Tracer(Name).Start(ctx, name, opts...)
}

// Extract returns ctx with the remote span context that traceparent and
// tracestate (W3C header values) describe; ctx unchanged when traceparent
// is empty or malformed.
func Extract(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, &Carrier{Parent: traceparent, State: tracestate})
}

// Inject returns ctx's span context as W3C traceparent and tracestate
// values, both empty when ctx has none.
func Inject(ctx context.Context) (traceparent, tracestate string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	var c Carrier
	propagation.TraceContext{}.Inject(ctx, &c)
	return c.Parent, c.State
}

// Carrier is a propagation.TextMapCarrier of the two W3C trace context
// headers, in fields rather than a map.
type Carrier struct{ Parent, State string }

// Get implements propagation.TextMapCarrier.
func (c *Carrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.Parent
	case "tracestate":
		return c.State
	}
	return ""
}

// Set implements propagation.TextMapCarrier.
func (c *Carrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.Parent = value
	case "tracestate":
		c.State = value
	}
}

// Keys implements propagation.TextMapCarrier.
func (c *Carrier) Keys() []string { return []string{"traceparent", "tracestate"} }
