package dev.guardwire.client;

import dev.guardwire.v1.ClassifyRequest;
import dev.guardwire.v1.ClassifyResponse;
import dev.guardwire.v1.Conversation;
import dev.guardwire.v1.GetModelInfoRequest;
import dev.guardwire.v1.GetModelInfoResponse;
import dev.guardwire.v1.GuardServiceGrpc;
import dev.guardwire.v1.StreamOpen;
import io.grpc.Deadline;
import io.grpc.ManagedChannel;
import io.grpc.netty.NettyChannelBuilder;
import java.time.Duration;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/**
 * A client of the Guardwire guard sidecar (guardwire.v1.GuardService): a deadline on every
 * call, typed errors ({@link GuardException}), bounded retries honouring RetryInfo, and a
 * three-valued {@link Decision}.
 *
 * <pre>{@code
 * try (GuardClient guard = GuardClient.forTarget("127.0.0.1:50051").build()) {
 *   Decision d = guard.check(Conversations.of("How do I bake bread?"));
 *   if (!d.allowed(FailMode.CLOSED)) { block(); }
 * }
 * }</pre>
 */
public final class GuardClient implements AutoCloseable {
  private final ManagedChannel channel; // null when the caller owns the channel
  private final GuardServiceGrpc.GuardServiceBlockingStub blocking;
  private final GuardServiceGrpc.GuardServiceStub async;
  private final Duration timeout;
  private final RetryPolicy retry;

  private GuardClient(io.grpc.Channel ch, ManagedChannel owned, Duration timeout, RetryPolicy retry) {
    this.channel = owned;
    this.blocking = GuardServiceGrpc.newBlockingStub(ch);
    this.async = GuardServiceGrpc.newStub(ch);
    this.timeout = timeout;
    this.retry = retry;
  }

  /** A builder for a plaintext connection to {@code host:port} (a sidecar on loopback). */
  public static Builder forTarget(String target) {
    return new Builder(target, null);
  }

  /** A builder over an existing channel (the caller keeps ownership of it). */
  public static Builder forChannel(io.grpc.Channel channel) {
    return new Builder(null, channel);
  }

  /** Builder of {@link GuardClient}. */
  public static final class Builder {
    private final String target;
    private final io.grpc.Channel channel;
    private Duration timeout = Duration.ofSeconds(2);
    private RetryPolicy retry = RetryPolicy.DEFAULT;

    private Builder(String target, io.grpc.Channel channel) {
      this.target = target;
      this.channel = channel;
    }

    /** Deadline of each call, all attempts together (default 2 s). */
    public Builder timeout(Duration timeout) {
      this.timeout = timeout;
      return this;
    }

    public Builder retryPolicy(RetryPolicy retry) {
      this.retry = retry;
      return this;
    }

    public GuardClient build() {
      if (channel != null) {
        return new GuardClient(channel, null, timeout, retry);
      }
      ManagedChannel ch = NettyChannelBuilder.forTarget(target).usePlaintext().build();
      return new GuardClient(ch, ch, timeout, retry);
    }
  }

  /** The generated blocking stub, for calls this wrapper does not cover. */
  public GuardServiceGrpc.GuardServiceBlockingStub stub() {
    return blocking;
  }

  /** Classifies the last turn of the conversation. Throws {@link GuardException}. */
  public ClassifyResponse classify(Conversation conversation) {
    return classify(ClassifyRequest.newBuilder().setConversation(conversation).build());
  }

  /** Sends a full request (threshold, policy, role...). Throws {@link GuardException}. */
  public ClassifyResponse classify(ClassifyRequest request) {
    return withRetry(stub -> stub.classify(request));
  }

  /** classify() with a three-valued answer; never throws for a failed call. */
  public Decision check(Conversation conversation) {
    return check(ClassifyRequest.newBuilder().setConversation(conversation).build());
  }

  /** classify() with a three-valued answer; never throws for a failed call. */
  public Decision check(ClassifyRequest request) {
    try {
      return Decision.of(classify(request));
    } catch (GuardException e) {
      return Decision.unavailable(e);
    }
  }

  /** Describes the served model (retried like classify). */
  public GetModelInfoResponse modelInfo() {
    return withRetry(stub -> stub.getModelInfo(GetModelInfoRequest.getDefaultInstance()));
  }

  /**
   * Opens a StreamClassify stream; {@code open} is sent first. The client's timeout bounds
   * the whole stream. Streams are not retried (the server holds per-stream state).
   */
  public GuardStream stream(StreamOpen open) {
    return stream(open, timeout);
  }

  /** As {@link #stream(StreamOpen)} with an explicit deadline for the whole stream. */
  public GuardStream stream(StreamOpen open, Duration streamTimeout) {
    return new GuardStream(async.withDeadlineAfter(streamTimeout.toNanos(), TimeUnit.NANOSECONDS), open);
  }

  private <T> T withRetry(Function<GuardServiceGrpc.GuardServiceBlockingStub, T> call) {
    Deadline deadline = Deadline.after(timeout.toNanos(), TimeUnit.NANOSECONDS);
    long backoffNanos = retry.initialBackoff().toNanos();
    for (int attempt = 1; ; attempt++) {
      try {
        return call.apply(blocking.withDeadline(deadline));
      } catch (RuntimeException raw) {
        GuardException e = GuardException.from(raw);
        e.setAttempts(attempt);
        if (!e.isRetryable() || attempt >= retry.maxAttempts()) {
          throw e;
        }
        long delayNanos;
        if (e.retryDelay().isPresent()) {
          Duration d = e.retryDelay().get();
          if (d.compareTo(retry.maxRetryDelay()) > 0) {
            throw e;
          }
          delayNanos = d.toNanos();
        } else {
          delayNanos = ThreadLocalRandom.current().nextLong(backoffNanos + 1);
          backoffNanos = Math.min(backoffNanos * 2, retry.maxBackoff().toNanos());
        }
        if (deadline.timeRemaining(TimeUnit.NANOSECONDS) <= delayNanos) {
          throw e; // the retry could not finish before the deadline
        }
        try {
          TimeUnit.NANOSECONDS.sleep(delayNanos);
        } catch (InterruptedException ie) {
          Thread.currentThread().interrupt();
          throw e;
        }
      }
    }
  }

  /** Shuts the channel down (when the client created it). */
  @Override
  public void close() {
    if (channel != null) {
      channel.shutdownNow();
      try {
        channel.awaitTermination(5, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
  }
}
