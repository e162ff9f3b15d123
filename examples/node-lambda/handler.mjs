// A Lambda-style handler that calls a bank through the KeyBridge broker.
//
// The function holds no key and no certificate: it sends plain HTTP to the broker
// (`keybridge serve`), which does the mTLS with the QWAC key and signs the request with the
// QSealC key, both inside the HSM, and returns the bank's answer.
//
// Environment:
//   KEYBRIDGE_BROKER_URL    the broker's base URL, e.g. http://10.0.3.17:8080 (no trailing /)
//   KEYBRIDGE_BROKER_TOKEN  the bearer token the broker knows this caller by (its SHA-256 is
//                           in the broker's configuration); keep it in the function's secrets
//   KEYBRIDGE_BANK          the bank name from the broker's configuration (default: the event's)
//   KEYBRIDGE_TIMEOUT_MS    how long to wait for the broker (default 25000)
//
// Event (all optional but `path`):
//   { "bank": "acme", "path": "/v1/payments/sepa-credit-transfers", "method": "POST",
//     "body": { ... } or "text", "headers": { "PSU-ID": "..." }, "requestId": "..." }
//
// Result (API Gateway proxy shape):
//   { statusCode, headers: { "content-type", "x-request-id" }, body }

import { randomUUID } from "node:crypto";

export async function handler(event = {}) {
  const base = process.env.KEYBRIDGE_BROKER_URL;
  const token = process.env.KEYBRIDGE_BROKER_TOKEN;
  if (!base || !token) {
    return answer(500, { error: "configuration", cause: "set KEYBRIDGE_BROKER_URL and KEYBRIDGE_BROKER_TOKEN" });
  }
  const bank = event.bank ?? process.env.KEYBRIDGE_BANK;
  const path = event.path ?? "";
  if (!bank || !/^[A-Za-z0-9._-]+$/.test(bank) || !path.startsWith("/")) {
    return answer(400, { error: "bad-event", cause: "the event needs a bank name and a path starting with /" });
  }

  const method = (event.method ?? "GET").toUpperCase();
  const requestId = event.requestId ?? randomUUID();
  // Header names compare without case: the event's own Authorization or X-Request-ID is replaced.
  const headers = new Headers(event.headers ?? {});
  headers.set("authorization", `Bearer ${token}`);
  headers.set("x-request-id", requestId);
  let body;
  if (event.body !== undefined && method !== "GET" && method !== "HEAD") {
    body = typeof event.body === "string" ? event.body : JSON.stringify(event.body);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
  }

  let response;
  try {
    response = await fetch(`${base}/${bank}${path}`, {
      method,
      headers,
      body,
      signal: AbortSignal.timeout(Number(process.env.KEYBRIDGE_TIMEOUT_MS ?? 25000)),
    });
  } catch (error) {
    // The broker is down or too slow; its own errors (401, 502, 503, 504 …) come back as answers.
    return answer(502, { error: "broker-unreachable", cause: String(error?.cause?.code ?? error?.name ?? error) }, requestId);
  }
  return {
    statusCode: response.status,
    headers: {
      "content-type": response.headers.get("content-type") ?? "application/octet-stream",
      "x-request-id": response.headers.get("x-request-id") ?? requestId,
    },
    body: await response.text(),
  };
}

function answer(statusCode, object, requestId) {
  const headers = { "content-type": "application/json" };
  if (requestId) headers["x-request-id"] = requestId;
  return { statusCode, headers, body: JSON.stringify(object) };
}
