// File transfer over the bridge's REST endpoints. Browsers cannot do gRPC
// client streaming, so uploads are a plain POST with upload progress from
// XMLHttpRequest; downloads fetch the bytes with the Authorization header and
// hand the browser an object URL. A token never appears in a URL.

import type { FileInfo } from "../../../shared/src/chat/model";
import { bodyMessage } from "../rpc/errors";

/** UploadHandle lets the caller cancel an upload in flight. */
export interface UploadHandle {
  promise: Promise<FileInfo>;
  abort: () => void;
}

/** fileRefFromJson accepts the bridge's JSON (protojson FileRef, bare or wrapped). */
export function fileRefFromJson(body: unknown): FileInfo {
  const o = (body ?? {}) as Record<string, unknown>;
  const f = (o.file && typeof o.file === "object" ? o.file : o) as Record<string, unknown>;
  const id = String(f.id ?? f.fileId ?? f.file_id ?? "");
  if (!/^[0-9a-f]{64}$/.test(id)) throw new Error("upload response has no file id");
  return {
    id,
    name: String(f.name ?? ""),
    size: Number(f.size ?? 0),
    contentType: String(f.contentType ?? f.content_type ?? ""),
  };
}

/**
 * uploadFile POSTs the file's bytes to /api/files. The body is the raw
 * content; the name travels percent-encoded in X-File-Name and the type in
 * Content-Type. onProgress gets a fraction in [0, 1].
 */
export function uploadFile(file: File, token: string, onProgress: (fraction: number) => void): UploadHandle {
  const xhr = new XMLHttpRequest();
  const promise = new Promise<FileInfo>((resolve, reject) => {
    xhr.open("POST", "/api/files");
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.setRequestHeader("X-File-Name", encodeURIComponent(file.name));
    xhr.responseType = "text";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          onProgress(1);
          resolve(fileRefFromJson(JSON.parse(xhr.responseText)));
        } catch (err) {
          reject(err);
        }
      } else {
        reject(new Error(errorText(xhr.status, xhr.responseText, xhr.getResponseHeader("Content-Type") ?? "")));
      }
    };
    xhr.onerror = () => reject(new Error("upload failed: network error"));
    xhr.onabort = () => reject(new Error("upload cancelled"));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}

/** downloadFile fetches a file and saves it under its name. */
export async function downloadFile(file: FileInfo, token: string): Promise<void> {
  const res = await fetch(`/api/files/${encodeURIComponent(file.id)}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!res.ok) throw new Error(errorText(res.status, await res.text(), res.headers.get("Content-Type") ?? ""));
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  try {
    const a = document.createElement("a");
    a.href = url;
    a.download = file.name || file.id;
    a.rel = "noopener";
    document.body.appendChild(a);
    a.click();
    a.remove();
  } finally {
    // Give the browser a moment to start the download before revoking.
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}

function errorText(status: number, body: string, contentType = ""): string {
  const msg = bodyMessage(contentType, body);
  return `HTTP ${status}${msg ? `: ${msg}` : ""}`;
}
