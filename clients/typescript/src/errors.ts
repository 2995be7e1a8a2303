// Typed errors decoded from google.rpc.Status details (ErrorInfo, BadRequest, RetryInfo).
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** ErrorInfo.domain of every error the Guardwire server returns. */
export const DOMAIN = "guardwire.v1";

/** Canonical gRPC code names, indexed by code number. */
const CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
  "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

export type CodeName = (typeof CODE_NAMES)[number];

/** The canonical name of a gRPC code, e.g. "INVALID_ARGUMENT". */
export function codeName(code: Code | number): CodeName | string {
  return CODE_NAMES[code] ?? `CODE(${code})`;
}

/** One google.rpc.BadRequest field violation. */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * A failed call, decoded from its google.rpc.Status. Every error this package throws is
 * a GuardError.
 */
export class GuardError extends Error {
  override name = "GuardError";
  /** gRPC status code (Connect's Code enum has the gRPC numbering). */
  readonly code: Code;
  /** ErrorInfo.domain ("" for transport errors without ErrorInfo, e.g. connection refused). */
  readonly domain: string;
  /** ErrorInfo.reason: a guardwire.v1.ErrorReason name such as "INVALID_REQUEST" ("" if none). */
  readonly reason: string;
  /** ErrorInfo.metadata. */
  readonly metadata: Record<string, string>;
  /** BadRequest field violations (INVALID_ARGUMENT). */
  readonly fieldViolations: FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds, or undefined when not sent. */
  readonly retryDelayMs: number | undefined;
  /** The status message. */
  readonly rawMessage: string;
  /** How many times the call was tried. */
  attempts = 1;
  override readonly cause: unknown;

  constructor(init: {
    code: Code;
    message: string;
    domain?: string;
    reason?: string;
    metadata?: Record<string, string>;
    fieldViolations?: FieldViolation[];
    retryDelayMs?: number;
    cause?: unknown;
  }) {
    super(`guardwire: ${codeName(init.code)}${init.reason ? ` (${init.reason})` : ""}: ${init.message}`);
    this.code = init.code;
    this.rawMessage = init.message;
    this.domain = init.domain ?? "";
    this.reason = init.reason ?? "";
    this.metadata = init.metadata ?? {};
    this.fieldViolations = init.fieldViolations ?? [];
    this.retryDelayMs = init.retryDelayMs;
    this.cause = init.cause;
  }

  /** Canonical code name, e.g. "INVALID_ARGUMENT". */
  get codeName(): string {
    return codeName(this.code);
  }

  /** UNAVAILABLE and RESOURCE_EXHAUSTED may be retried unchanged (and are, automatically). */
  get retryable(): boolean {
    return this.code === Code.Unavailable || this.code === Code.ResourceExhausted;
  }

  /** Converts anything thrown by a Connect call into a GuardError. */
  static from(reason: unknown): GuardError {
    if (reason instanceof GuardError) return reason;
    const err = ConnectError.from(reason);
    let domain = "";
    let errReason = "";
    let metadata: Record<string, string> = {};
    const fieldViolations: FieldViolation[] = [];
    let retryDelayMs: number | undefined;
    for (const info of err.findDetails(ErrorInfoSchema)) {
      domain = info.domain;
      errReason = info.reason;
      metadata = { ...info.metadata };
    }
    for (const bad of err.findDetails(BadRequestSchema)) {
      for (const v of bad.fieldViolations) {
        fieldViolations.push({ field: v.field, description: v.description });
      }
    }
    for (const retry of err.findDetails(RetryInfoSchema)) {
      if (retry.retryDelay) {
        retryDelayMs = Number(retry.retryDelay.seconds) * 1000 + retry.retryDelay.nanos / 1e6;
      }
    }
    return new GuardError({
      code: err.code,
      message: err.rawMessage,
      domain,
      reason: errReason,
      metadata,
      fieldViolations,
      retryDelayMs,
      cause: reason,
    });
  }

  /** A plain object for logs / JSON. */
  toJSON(): Record<string, unknown> {
    return {
      code: this.codeName,
      domain: this.domain,
      reason: this.reason,
      message: this.rawMessage,
      metadata: this.metadata,
      field_violations: this.fieldViolations,
      retry_delay_ms: this.retryDelayMs ?? null,
      attempts: this.attempts,
    };
  }
}
