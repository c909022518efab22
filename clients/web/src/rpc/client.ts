// Unary gRPC-Web calls with improbable's default transport (fetch, falling
// back to XHR), returning promises and typed errors.

import { grpc } from "@improbable-eng/grpc-web";
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { wire, type UnaryMethod, type Wire } from "./adapter";
import { explainRefusals } from "./errors";

// Every unary call reads the body of a refusal made outside gRPC.
const transport = explainRefusals();

/** RpcError is a failed call: the gRPC status code and message. */
export class RpcError extends Error {
  readonly code: grpc.Code;
  constructor(code: grpc.Code, message: string) {
    super(message || codeName(code));
    this.name = "RpcError";
    this.code = code;
  }
  /** codeName is the canonical status name, e.g. "PermissionDenied". */
  get codeName(): string {
    return codeName(this.code);
  }
}

/** codeName names a gRPC status code as grpc.Code spells it. */
export function codeName(code: grpc.Code): string {
  return grpc.Code[code] ?? `Code${code}`;
}

/** apiHost is where the app was served from; the bridge shares the origin. */
export function apiHost(): string {
  return window.location.origin;
}

/** UnaryOptions are per-call options. */
export interface UnaryOptions {
  /** token, when set, is sent as `authorization: Bearer <token>`. */
  token?: string;
  /** signal aborts the call (the promise rejects with Cancelled). */
  signal?: AbortSignal;
}

/** unary calls one unary method and resolves with the response message. */
export function unary<I extends DescMessage, O extends DescMessage>(
  method: UnaryMethod<I, O>,
  input: MessageInitShape<I>,
  opts: UnaryOptions = {},
): Promise<MessageShape<O>> {
  const schema = method.requestType as unknown as { schema: I };
  return new Promise((resolve, reject) => {
    const metadata = new grpc.Metadata();
    if (opts.token) metadata.set("authorization", `Bearer ${opts.token}`);
    const req = grpc.unary<Wire<I>, Wire<O>, UnaryMethod<I, O>>(method, {
      host: apiHost(),
      transport,
      request: wire(schema.schema, input),
      metadata,
      onEnd: (out) => {
        if (out.status === grpc.Code.OK && out.message) {
          resolve(out.message.message);
        } else {
          reject(new RpcError(out.status === grpc.Code.OK ? grpc.Code.Internal : out.status, out.statusMessage));
        }
      },
    });
    opts.signal?.addEventListener("abort", () => {
      req.close();
      reject(new RpcError(grpc.Code.Canceled, "cancelled"));
    });
  });
}
