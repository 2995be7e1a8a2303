package dev.guardwire.client;

import dev.guardwire.v1.ClassifyResponse;
import io.grpc.Status;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The result of {@link GuardClient#check}: an outcome, the server's response (when there is
 * a verdict) and the error (when there is none).
 */
public record Decision(Outcome outcome, Optional<ClassifyResponse> response,
    Optional<GuardException> error) {

  /** SAFE passes, UNSAFE is blocked, UNAVAILABLE follows the explicit fail mode. */
  public boolean allowed(FailMode mode) {
    return switch (outcome) {
      case SAFE -> true;
      case UNSAFE -> false;
      case UNAVAILABLE -> mode == FailMode.OPEN;
    };
  }

  /** Maps a classification to a Decision (VERDICT_UNSPECIFIED is UNAVAILABLE). */
  public static Decision of(ClassifyResponse response) {
    return switch (response.getVerdict()) {
      case VERDICT_SAFE -> new Decision(Outcome.SAFE, Optional.of(response), Optional.empty());
      case VERDICT_UNSAFE -> new Decision(Outcome.UNSAFE, Optional.of(response), Optional.empty());
      default -> new Decision(Outcome.UNAVAILABLE, Optional.of(response), Optional.of(
          new GuardException(Status.Code.UNKNOWN, "server answered VERDICT_UNSPECIFIED", "", "",
              Map.of(), List.of(), (Duration) null, null)));
    };
  }

  /** A Decision without a verdict. */
  public static Decision unavailable(GuardException error) {
    return new Decision(Outcome.UNAVAILABLE, Optional.empty(), Optional.of(error));
  }
}
