package dev.guardwire.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Metadata;
import io.grpc.Status;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;

/**
 * A failed call, decoded from its {@code google.rpc.Status}: the gRPC code and the
 * ErrorInfo / BadRequest / RetryInfo details the server attached. Every error the client
 * throws is a GuardException (unchecked, like grpc-java's StatusRuntimeException).
 */
public final class GuardException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** ErrorInfo.domain of every error the Guardwire server returns. */
  public static final String DOMAIN = "guardwire.v1";

  private static final Metadata.Key<byte[]> STATUS_DETAILS_KEY =
      Metadata.Key.of("grpc-status-details-bin", Metadata.BINARY_BYTE_MARSHALLER);

  /** One google.rpc.BadRequest field violation. */
  public record FieldViolation(String field, String description) {}

  private final Status.Code code;
  private final String statusMessage;
  private final String domain;
  private final String reason;
  private final Map<String, String> metadata;
  private final List<FieldViolation> fieldViolations;
  private final Duration retryDelay; // null when the server sent no RetryInfo
  private int attempts = 1;

  GuardException(Status.Code code, String statusMessage, String domain, String reason,
      Map<String, String> metadata, List<FieldViolation> fieldViolations, Duration retryDelay,
      Throwable cause) {
    super(describe(code, reason, statusMessage), cause);
    this.code = code;
    this.statusMessage = statusMessage == null ? "" : statusMessage;
    this.domain = domain;
    this.reason = reason;
    this.metadata = Collections.unmodifiableMap(new TreeMap<>(metadata));
    this.fieldViolations = List.copyOf(fieldViolations);
    this.retryDelay = retryDelay;
  }

  private static String describe(Status.Code code, String reason, String message) {
    return "guardwire: " + code + (reason.isEmpty() ? "" : " (" + reason + ")")
        + (message == null || message.isEmpty() ? "" : ": " + message);
  }

  /** Converts any throwable of a gRPC call (StatusRuntimeException etc.) to a GuardException. */
  public static GuardException from(Throwable t) {
    if (t instanceof GuardException g) {
      return g;
    }
    Status status = Status.fromThrowable(t);
    Metadata trailers = Status.trailersFromThrowable(t);
    String domain = "";
    String reason = "";
    Map<String, String> metadata = new TreeMap<>();
    List<FieldViolation> violations = new ArrayList<>();
    Duration retryDelay = null;
    byte[] raw = trailers == null ? null : trailers.get(STATUS_DETAILS_KEY);
    if (raw != null) {
      try {
        com.google.rpc.Status rich = com.google.rpc.Status.parseFrom(raw);
        for (Any detail : rich.getDetailsList()) {
          if (detail.is(ErrorInfo.class)) {
            ErrorInfo info = detail.unpack(ErrorInfo.class);
            domain = info.getDomain();
            reason = info.getReason();
            metadata.putAll(info.getMetadataMap());
          } else if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
              violations.add(new FieldViolation(v.getField(), v.getDescription()));
            }
          } else if (detail.is(RetryInfo.class)) {
            com.google.protobuf.Duration d = detail.unpack(RetryInfo.class).getRetryDelay();
            retryDelay = Duration.ofSeconds(d.getSeconds(), d.getNanos());
          }
        }
      } catch (InvalidProtocolBufferException e) {
        // Undecodable details: keep the plain status.
      }
    }
    return new GuardException(status.getCode(), status.getDescription(), domain, reason, metadata,
        violations, retryDelay, t);
  }

  /** The gRPC status code. */
  public Status.Code code() { return code; }

  /** Canonical code name, e.g. "INVALID_ARGUMENT". */
  public String codeName() { return code.name(); }

  /** The status message. */
  public String statusMessage() { return statusMessage; }

  /** ErrorInfo.domain ("" for transport errors without ErrorInfo, e.g. connection refused). */
  public String domain() { return domain; }

  /** ErrorInfo.reason: a guardwire.v1.ErrorReason name such as "INVALID_REQUEST" ("" if none). */
  public String reason() { return reason; }

  /** ErrorInfo.metadata. */
  public Map<String, String> metadata() { return metadata; }

  /** BadRequest field violations (INVALID_ARGUMENT). */
  public List<FieldViolation> fieldViolations() { return fieldViolations; }

  /** RetryInfo.retry_delay, when the server sent one. */
  public Optional<Duration> retryDelay() { return Optional.ofNullable(retryDelay); }

  /** How many times the call was tried. */
  public int attempts() { return attempts; }

  void setAttempts(int attempts) { this.attempts = attempts; }

  /** UNAVAILABLE and RESOURCE_EXHAUSTED may be retried unchanged (and are, automatically). */
  public boolean isRetryable() {
    return code == Status.Code.UNAVAILABLE || code == Status.Code.RESOURCE_EXHAUSTED;
  }
}
