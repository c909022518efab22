// Package-level note: this module turns protobuf-es v2 descriptors (the code
// buf generates into src/gen) into the MethodDefinition objects that
// @improbable-eng/grpc-web expects. improbable's client was written for
// google-protobuf classes: it calls `request.serializeBinary()` and
// `responseType.deserializeBinary(bytes)` and nothing else (toObject only for
// debug logs), so a thin wrapper around toBinary/fromBinary is enough.

import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { grpc } from "@improbable-eng/grpc-web";

/** Wire wraps one protobuf-es message so improbable's client can frame it. */
export class Wire<Desc extends DescMessage> implements grpc.ProtobufMessage {
  readonly schema: Desc;
  readonly message: MessageShape<Desc>;

  constructor(schema: Desc, message: MessageShape<Desc>) {
    this.schema = schema;
    this.message = message;
  }

  serializeBinary(): Uint8Array {
    return toBinary(this.schema, this.message);
  }

  toObject(): {} {
    // Only used by improbable's debug logging.
    return toJson(this.schema, this.message, { alwaysEmitImplicit: false }) as {};
  }
}

/** WireClass is the constructor improbable calls to decode responses. */
export interface WireClass<Desc extends DescMessage> extends grpc.ProtobufMessageClass<Wire<Desc>> {
  new (): Wire<Desc>;
  deserializeBinary(bytes: Uint8Array): Wire<Desc>;
  readonly schema: Desc;
}

const classes = new WeakMap<DescMessage, WireClass<DescMessage>>();

/** wireClass returns the (cached) improbable message class for a schema. */
export function wireClass<Desc extends DescMessage>(schema: Desc): WireClass<Desc> {
  const cached = classes.get(schema);
  if (cached) return cached as unknown as WireClass<Desc>;
  const cls = class extends Wire<Desc> {
    static readonly schema = schema;
    constructor(message?: MessageShape<Desc>) {
      super(schema, message ?? create(schema));
    }
    static deserializeBinary(bytes: Uint8Array): Wire<Desc> {
      return new cls(fromBinary(schema, bytes));
    }
  };
  classes.set(schema, cls as unknown as WireClass<DescMessage>);
  return cls;
}

/** wire builds a request message for improbable from an init shape. */
export function wire<Desc extends DescMessage>(schema: Desc, init?: MessageInitShape<Desc>): Wire<Desc> {
  return new Wire(schema, create(schema, init));
}

/** Method is an improbable MethodDefinition typed by the protobuf-es schemas. */
export type Method<I extends DescMessage, O extends DescMessage> = grpc.MethodDefinition<Wire<I>, Wire<O>>;

/** UnaryMethod is Method narrowed to unary calls (what grpc.unary accepts). */
export type UnaryMethod<I extends DescMessage, O extends DescMessage> = grpc.UnaryMethodDefinition<Wire<I>, Wire<O>>;

type TypedMethod<I extends DescMessage, O extends DescMessage> = DescMethod & { input: I; output: O };

/**
 * methodDefinition adapts one generated method, e.g. `Chat.method.connect`,
 * to improbable's MethodDefinition. The service name is the fully qualified
 * protobuf name ("chat.v1.Chat") and the method name the protobuf name
 * ("Connect"), which is what the URL path `/chat.v1.Chat/Connect` needs.
 */
export function methodDefinition<I extends DescMessage, O extends DescMessage>(
  method: TypedMethod<I, O>,
): Method<I, O> {
  return {
    methodName: method.name,
    service: { serviceName: method.parent.typeName },
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestType: wireClass(method.input),
    responseType: wireClass(method.output),
  };
}

/** unaryDefinition is methodDefinition for unary methods, checked at runtime. */
export function unaryDefinition<I extends DescMessage, O extends DescMessage>(
  method: TypedMethod<I, O> & { methodKind: "unary" },
): UnaryMethod<I, O> {
  const def = methodDefinition(method);
  if (def.requestStream || def.responseStream) {
    throw new Error(`${method.parent.typeName}/${method.name} is not unary`);
  }
  return def as UnaryMethod<I, O>;
}
