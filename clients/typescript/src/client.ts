// GuardClient: a thin wrapper over the generated guardwire.v1 stubs (protobuf-es + Connect,
// gRPC protocol over HTTP/2): deadlines, typed errors, bounded retries honouring RetryInfo,
// a three-valued Decision, and a push-style StreamClassify wrapper.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  ConversationSchema,
  Role,
  TurnSchema,
  type Conversation,
  type Turn,
} from "./gen/guardwire/v1/conversation_pb.js";
import {
  ClassifyRequestSchema,
  GuardService,
  StreamClassifyRequestSchema,
  StreamOpenSchema,
  type ClassifyRequest,
  type ClassifyResponse,
  type GetModelInfoResponse,
  type StreamClassifyRequest,
  type StreamClassifyResponse,
} from "./gen/guardwire/v1/guard_service_pb.js";
import { Verdict } from "./gen/guardwire/v1/verdict_pb.js";
import { GuardError } from "./errors.js";

/** Retry bounds for classify / modelInfo. Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried. */
export interface RetryPolicy {
  /** Total tries including the first (>= 1). */
  maxAttempts: number;
  /** Backoff (full jitter, doubling) used when the server sent no RetryInfo. */
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** A RetryInfo delay above this is not waited for: the error is thrown. */
  maxRetryDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 3,
  initialBackoffMs: 50,
  maxBackoffMs: 1000,
  maxRetryDelayMs: 5000,
};

export interface GuardClientOptions {
  /** Deadline of each call, all attempts together (default 2000 ms). */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
}

/** A conversation: one user text, {role, content} turns (oldest first), or the message. */
export type ConversationInput =
  | string
  | ReadonlyArray<{ role: "user" | "assistant"; content: string }>
  | Conversation;

export interface ClassifyOptions {
  /** Deadline of this call (overrides the client's timeoutMs). */
  timeoutMs?: number;
  signal?: AbortSignal;
  threshold?: number;
  includeCategoryScores?: boolean;
  policy?: MessageInitShape<typeof ClassifyRequestSchema>["policy"];
  role?: Role;
}

/** The three-valued outcome of a check; UNAVAILABLE is never "safe" by itself. */
export enum Outcome {
  /** No verdict: guard down, overloaded, timed out, rejected the request. */
  UNAVAILABLE = "UNAVAILABLE",
  SAFE = "SAFE",
  UNSAFE = "UNSAFE",
}

/** What to do with UNAVAILABLE: the caller must choose. */
export enum FailMode {
  CLOSED = "closed",
  OPEN = "open",
}

export interface Decision {
  outcome: Outcome;
  /** The server's answer (undefined when there is no verdict). */
  response?: ClassifyResponse;
  /** Why there is no verdict. */
  error?: GuardError;
}

/** SAFE passes, UNSAFE is blocked, UNAVAILABLE follows the explicit fail mode. */
export function allowed(d: Decision, mode: FailMode): boolean {
  if (d.outcome === Outcome.SAFE) return true;
  if (d.outcome === Outcome.UNSAFE) return false;
  return mode === FailMode.OPEN;
}

/** Maps a classification result (or the error of the call) to a Decision. */
export function decisionOf(response: ClassifyResponse | undefined, error?: unknown): Decision {
  if (error !== undefined) return { outcome: Outcome.UNAVAILABLE, error: GuardError.from(error) };
  switch (response?.verdict) {
    case Verdict.SAFE:
      return { outcome: Outcome.SAFE, response };
    case Verdict.UNSAFE:
      return { outcome: Outcome.UNSAFE, response };
    default:
      return {
        outcome: Outcome.UNAVAILABLE,
        response,
        error: new GuardError({ code: Code.Unknown, message: "server answered VERDICT_UNSPECIFIED" }),
      };
  }
}

export function user(content: string): Turn {
  return create(TurnSchema, { role: Role.USER, content });
}

export function assistant(content: string): Turn {
  return create(TurnSchema, { role: Role.ASSISTANT, content });
}

export function toConversation(input: ConversationInput): Conversation {
  if (typeof input === "string") return create(ConversationSchema, { turns: [user(input)] });
  if (Array.isArray(input)) {
    return create(ConversationSchema, {
      turns: input.map((t) => (t.role === "user" ? user(t.content) : assistant(t.content))),
    });
  }
  return input as Conversation;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });

/** A client of one Guardwire server. Call close() when done (it closes the HTTP/2 session). */
export class GuardClient {
  readonly stub: Client<typeof GuardService>;
  private readonly session: Http2SessionManager;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;

  /** @param target "host:port" (plaintext, e.g. a sidecar on loopback) or an http(s) URL. */
  constructor(target: string, options: GuardClientOptions = {}) {
    const baseUrl = /^https?:\/\//.test(target) ? target : `http://${target}`;
    this.session = new Http2SessionManager(baseUrl);
    this.stub = createClient(GuardService, createGrpcTransport({ baseUrl, sessionManager: this.session }));
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.retry = { ...DEFAULT_RETRY_POLICY, ...options.retry };
  }

  close(): void {
    this.session.abort();
  }

  /** Classifies the last turn. Throws GuardError; retries UNAVAILABLE / RESOURCE_EXHAUSTED. */
  async classify(conversation: ConversationInput, options: ClassifyOptions = {}): Promise<ClassifyResponse> {
    const req = create(ClassifyRequestSchema, {
      conversation: toConversation(conversation),
      role: options.role ?? Role.UNSPECIFIED,
      policy: options.policy,
      options: {
        threshold: options.threshold,
        includeCategoryScores: options.includeCategoryScores ?? false,
      },
    });
    return this.classifyRequest(req, options);
  }

  /** Sends a full ClassifyRequest (see classify). */
  classifyRequest(req: ClassifyRequest, options: { timeoutMs?: number; signal?: AbortSignal } = {}) {
    return this.withRetry((callOpts) => this.stub.classify(req, callOpts), options);
  }

  /** classify() with a three-valued answer; never throws for a failed call. */
  async check(conversation: ConversationInput, options: ClassifyOptions = {}): Promise<Decision> {
    try {
      return decisionOf(await this.classify(conversation, options));
    } catch (err) {
      return decisionOf(undefined, err);
    }
  }

  modelInfo(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<GetModelInfoResponse> {
    return this.withRetry((callOpts) => this.stub.getModelInfo({}, callOpts), options);
  }

  /**
   * Opens a StreamClassify stream; `open` is sent first. The deadline (timeoutMs) bounds
   * the whole stream. Streams are not retried (the server holds per-stream state).
   */
  stream(
    open: MessageInitShape<typeof StreamOpenSchema> = {},
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): GuardStream {
    return new GuardStream(this.stub, open, options.timeoutMs ?? this.timeoutMs, options.signal);
  }

  private async withRetry<T>(
    call: (o: { timeoutMs: number; signal: AbortSignal }) => Promise<T>,
    options: { timeoutMs?: number; signal?: AbortSignal },
  ): Promise<T> {
    const budget = options.timeoutMs ?? this.timeoutMs;
    const deadline = Date.now() + budget;
    const signal = options.signal ?? new AbortController().signal;
    let backoff = this.retry.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      const remaining = deadline - Date.now();
      try {
        if (remaining <= 0) throw new GuardError({ code: Code.DeadlineExceeded, message: "deadline exceeded" });
        return await call({ timeoutMs: remaining, signal });
      } catch (raw) {
        const err = GuardError.from(raw);
        err.attempts = attempt;
        if (!err.retryable || attempt >= this.retry.maxAttempts || signal.aborted) throw err;
        let delay: number;
        if (err.retryDelayMs !== undefined) {
          if (err.retryDelayMs > this.retry.maxRetryDelayMs) throw err;
          delay = err.retryDelayMs;
        } else {
          delay = Math.random() * backoff;
          backoff = Math.min(backoff * 2, this.retry.maxBackoffMs);
        }
        if (Date.now() + delay >= deadline) throw err; // cannot retry before the deadline
        await sleep(delay, signal);
      }
    }
  }
}

/**
 * One StreamClassify stream. Send with sendTurn / sendDelta / checkNow / endOfTurn, then
 * closeSend(); iterate (for await) to read responses. Errors are thrown as GuardError
 * (an UNIMPLEMENTED server gives code UNIMPLEMENTED).
 */
export class GuardStream implements AsyncIterable<StreamClassifyResponse> {
  private readonly queue: StreamClassifyRequest[] = [];
  private wake: (() => void) | undefined;
  private closed = false;
  private readonly abort = new AbortController();
  private readonly responses: AsyncIterable<StreamClassifyResponse>;

  constructor(
    stub: Client<typeof GuardService>,
    open: MessageInitShape<typeof StreamOpenSchema>,
    timeoutMs: number,
    signal?: AbortSignal,
  ) {
    signal?.addEventListener("abort", () => this.abort.abort(signal.reason), { once: true });
    this.send({ kind: { case: "open", value: create(StreamOpenSchema, open) } });
    this.responses = stub.streamClassify(this.requests(), { timeoutMs, signal: this.abort.signal });
  }

  private async *requests(): AsyncGenerator<StreamClassifyRequest> {
    for (;;) {
      const next = this.queue.shift();
      if (next) {
        yield next;
        continue;
      }
      if (this.closed) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  private send(init: MessageInitShape<typeof StreamClassifyRequestSchema>): void {
    if (this.closed) throw new Error("stream already half-closed");
    this.queue.push(create(StreamClassifyRequestSchema, init));
    this.wake?.();
  }

  sendTurn(turn: Turn): void {
    this.send({ kind: { case: "turn", value: turn } });
  }

  sendDelta(text: string): void {
    this.send({ kind: { case: "delta", value: { text } } });
  }

  checkNow(): void {
    this.send({ kind: { case: "check", value: {} } });
  }

  endOfTurn(): void {
    this.send({ kind: { case: "endOfTurn", value: {} } });
  }

  /** Half-close: the server answers every owed check, then ends the stream. */
  closeSend(): void {
    this.closed = true;
    this.wake?.();
  }

  /** Cancels the stream (unanswered checks are dropped). */
  cancel(): void {
    this.closed = true;
    this.wake?.();
    this.abort.abort();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamClassifyResponse> {
    try {
      for await (const r of this.responses) yield r;
    } catch (err) {
      throw GuardError.from(err);
    } finally {
      this.closed = true;
      this.wake?.();
    }
  }

  /** Half-closes, then returns every remaining response (throws GuardError on error). */
  async collect(): Promise<StreamClassifyResponse[]> {
    this.closeSend();
    const out: StreamClassifyResponse[] = [];
    for await (const r of this) out.push(r);
    return out;
  }
}

/** Maps a stream response to a three-valued Decision. */
export function streamDecision(r: StreamClassifyResponse): Decision {
  return decisionOf(r.result);
}
