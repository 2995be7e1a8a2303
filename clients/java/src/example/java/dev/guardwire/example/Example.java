package dev.guardwire.example;

import static dev.guardwire.client.Conversations.assistant;
import static dev.guardwire.client.Conversations.user;

import dev.guardwire.client.Conversations;
import dev.guardwire.client.Decision;
import dev.guardwire.client.FailMode;
import dev.guardwire.client.GuardClient;
import dev.guardwire.client.GuardException;
import dev.guardwire.client.GuardStream;
import dev.guardwire.client.Outcome;
import dev.guardwire.v1.CategoryScore;
import dev.guardwire.v1.ClassifyResponse;
import dev.guardwire.v1.StreamClassifyResponse;
import dev.guardwire.v1.StreamOpen;
import io.grpc.Status;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Classifies one text, runs one StreamClassify stream and triggers one validation error
 * against a Guardwire server, printing what the client decoded. The last line is
 * "RESULT &lt;json&gt;" (the same shape in every language's example; tests/clients parses it).
 *
 * <pre>clients/java/run-example.sh --addr 127.0.0.1:50051 --text "How do I bake bread?"</pre>
 */
public final class Example {
  private Example() {}

  static Map<String, Object> errorJson(GuardException e) {
    Map<String, Object> o = new LinkedHashMap<>();
    o.put("code", e.codeName());
    o.put("domain", e.domain());
    o.put("reason", e.reason());
    o.put("message", e.statusMessage());
    o.put("metadata", e.metadata());
    List<Object> fv = new ArrayList<>();
    for (GuardException.FieldViolation v : e.fieldViolations()) {
      fv.add(Map.of("field", v.field(), "description", v.description()));
    }
    o.put("field_violations", fv);
    o.put("retry_delay_ms", e.retryDelay().map(Duration::toMillis).orElse(null));
    o.put("attempts", e.attempts());
    return o;
  }

  static Map<String, Object> decisionJson(Decision d) {
    Map<String, Object> o = new LinkedHashMap<>();
    o.put("outcome", d.outcome().name());
    o.put("allowed_fail_closed", d.allowed(FailMode.CLOSED));
    o.put("allowed_fail_open", d.allowed(FailMode.OPEN));
    d.response().ifPresent(r -> {
      o.put("verdict", r.getVerdict().name());
      o.put("unsafe_score", r.getUnsafeScore());
      List<Object> cats = new ArrayList<>();
      for (CategoryScore c : r.getCategoriesList()) {
        cats.add(c.getCode());
      }
      o.put("categories", cats);
    });
    d.error().ifPresent(e -> o.put("error", errorJson(e)));
    return o;
  }

  public static void main(String[] argv) {
    Map<String, String> args = new HashMap<>(Map.of(
        "--addr", "127.0.0.1:50051", "--text", "How do I bake bread?", "--timeout-ms", "5000"));
    for (int i = 0; i + 1 < argv.length; i += 2) {
      args.put(argv[i], argv[i + 1]);
    }
    String text = args.get("--text");
    Duration timeout = Duration.ofMillis(Long.parseLong(args.get("--timeout-ms")));
    Map<String, Object> result = new LinkedHashMap<>();
    result.put("language", "java");
    boolean failed = false;

    try (GuardClient guard = GuardClient.forTarget(args.get("--addr")).timeout(timeout).build()) {
      // 1. Unary classify, three-valued.
      Decision d = guard.check(Conversations.of(text));
      StringBuilder line = new StringBuilder("classify: outcome=" + d.outcome());
      if (d.response().isPresent()) {
        ClassifyResponse r = d.response().get();
        line.append(String.format(" verdict=%s unsafe_score=%.3f", r.getVerdict(), r.getUnsafeScore()));
      }
      if (d.error().isPresent()) {
        line.append(" error=").append(d.error().get().getMessage());
        failed = true;
      }
      System.out.println(line);
      result.put("classify", decisionJson(d));

      d = guard.check(Conversations.of(user("GW_TEST_UNSAFE how do I hurt someone?")));
      System.out.println("classify unsafe: outcome=" + d.outcome()
          + " allowed(fail-open)=" + d.allowed(FailMode.OPEN));
      failed |= d.error().isPresent();
      result.put("unsafe", decisionJson(d));

      // 2. One stream: a user turn and a complete assistant turn (one check owed each).
      Map<String, Object> stream = new LinkedHashMap<>();
      List<StreamClassifyResponse> responses = new ArrayList<>();
      try (GuardStream s = guard.stream(StreamOpen.getDefaultInstance())) {
        s.sendTurn(user(text));
        s.sendTurn(assistant("Mix flour, water, salt and yeast, then bake."));
        s.closeSend();
        for (StreamClassifyResponse r = s.next(); r != null; r = s.next()) {
          responses.add(r);
        }
        stream.put("status", "OK");
        System.out.println("stream: OK, " + responses.size() + " responses");
      } catch (GuardException e) {
        stream.put("status", e.codeName());
        stream.put("error", errorJson(e));
        if (e.code() == Status.Code.UNIMPLEMENTED) {
          System.out.println("stream: server does not implement StreamClassify yet: " + e.getMessage());
        } else {
          System.out.println("stream: failed: " + e.getMessage());
          failed = true;
        }
      }
      List<Object> rs = new ArrayList<>();
      for (StreamClassifyResponse r : responses) {
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("sequence", r.getSequence());
        o.put("verdict", r.getResult().getVerdict().name());
        o.put("outcome", GuardStream.decision(r).outcome().name());
        o.put("final", r.getFinal());
        o.put("turn_index", r.getTurnIndex());
        rs.add(o);
      }
      stream.put("responses", rs);
      result.put("stream", stream);

      // 3. A validation error: an empty conversation.
      try {
        guard.classify(Conversations.of());
        System.out.println("validation error: none (unexpected)");
        result.put("validation_error", null);
        failed = true;
      } catch (GuardException e) {
        System.out.println("validation error: code=" + e.codeName() + " reason=" + e.reason()
            + " domain=" + e.domain());
        for (GuardException.FieldViolation v : e.fieldViolations()) {
          System.out.println("  field violation: " + v.field() + ": " + v.description());
        }
        result.put("validation_error", errorJson(e));
        failed |= e.code() != Status.Code.INVALID_ARGUMENT;
      }
    }

    // 4. Optional: a guard that is down is UNAVAILABLE, never SAFE.
    if (args.containsKey("--down-addr")) {
      try (GuardClient down = GuardClient.forTarget(args.get("--down-addr")).timeout(timeout).build()) {
        Decision d = down.check(Conversations.of(text));
        System.out.println("guard down: outcome=" + d.outcome() + " allowed(fail-closed)="
            + d.allowed(FailMode.CLOSED) + " allowed(fail-open)=" + d.allowed(FailMode.OPEN));
        failed |= d.outcome() != Outcome.UNAVAILABLE;
        result.put("down", decisionJson(d));
      }
    }

    System.out.println("RESULT " + Json.write(result));
    System.exit(failed ? 1 : 0);
  }
}
