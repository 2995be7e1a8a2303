package dev.guardwire.client;

import java.time.Duration;

/**
 * Bounds the automatic retries of classify / modelInfo. Only UNAVAILABLE and
 * RESOURCE_EXHAUSTED are retried; the delay is the server's RetryInfo delay when sent, else
 * an exponential backoff with full jitter. Retries never outlive the call's deadline.
 *
 * @param maxAttempts total tries including the first (at least 1)
 * @param initialBackoff first backoff bound without RetryInfo (doubles each retry)
 * @param maxBackoff largest backoff bound
 * @param maxRetryDelay a longer RetryInfo delay is not waited for (the error is thrown)
 */
public record RetryPolicy(int maxAttempts, Duration initialBackoff, Duration maxBackoff,
    Duration maxRetryDelay) {
  /** 3 attempts, 50 ms initial backoff, 1 s max backoff, RetryInfo up to 5 s. */
  public static final RetryPolicy DEFAULT = new RetryPolicy(3, Duration.ofMillis(50),
      Duration.ofSeconds(1), Duration.ofSeconds(5));

  /** No retries. */
  public static final RetryPolicy NONE = new RetryPolicy(1, Duration.ZERO, Duration.ZERO, Duration.ZERO);

  public RetryPolicy {
    if (maxAttempts < 1) {
      throw new IllegalArgumentException("maxAttempts must be >= 1");
    }
  }
}
