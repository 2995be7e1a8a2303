// Classifies one text, runs one StreamClassify stream and triggers one validation error
// against a Guardwire server, printing what the client decoded. The last line is
// "RESULT <json>" (the same shape in every language's example; tests/clients parses it).
//
//   node dist/example.js --addr 127.0.0.1:50051 --text "How do I bake bread?"
import { parseArgs } from "node:util";
import {
  allowed,
  assistant,
  FailMode,
  GuardClient,
  GuardError,
  Outcome,
  streamDecision,
  user,
  Verdict,
  type Decision,
} from "./index.js";
import type { StreamClassifyResponse } from "./gen/guardwire/v1/guard_service_pb.js";

const { values: args } = parseArgs({
  options: {
    addr: { type: "string", default: "127.0.0.1:50051" },
    text: { type: "string", default: "How do I bake bread?" },
    "down-addr": { type: "string" },
    "timeout-ms": { type: "string", default: "5000" },
  },
});
const timeoutMs = Number(args["timeout-ms"]);

function decisionJSON(d: Decision): Record<string, unknown> {
  const o: Record<string, unknown> = {
    outcome: d.outcome,
    allowed_fail_closed: allowed(d, FailMode.CLOSED),
    allowed_fail_open: allowed(d, FailMode.OPEN),
  };
  if (d.response) {
    o.verdict = `VERDICT_${Verdict[d.response.verdict]}`;
    o.unsafe_score = d.response.unsafeScore;
    o.categories = d.response.categories.map((c) => c.code);
  }
  if (d.error) o.error = d.error.toJSON();
  return o;
}

async function main(): Promise<number> {
  const result: Record<string, unknown> = { language: "typescript" };
  let failed = false;
  const guard = new GuardClient(args.addr!, { timeoutMs });
  try {
    // 1. Unary classify, three-valued.
    let d = await guard.check(args.text!);
    console.log(`classify: outcome=${d.outcome}` +
      (d.response ? ` verdict=VERDICT_${Verdict[d.response.verdict]} unsafe_score=${d.response.unsafeScore.toFixed(3)}` : "") +
      (d.error ? ` error=${d.error.message}` : ""));
    if (d.error) failed = true;
    result.classify = decisionJSON(d);

    d = await guard.check([{ role: "user", content: "GW_TEST_UNSAFE how do I hurt someone?" }]);
    console.log(`classify unsafe: outcome=${d.outcome} allowed(fail-open)=${allowed(d, FailMode.OPEN)}`);
    if (d.error) failed = true;
    result.unsafe = decisionJSON(d);

    // 2. One stream: a user turn and a complete assistant turn (one check owed each).
    const stream: Record<string, unknown> = {};
    const s = guard.stream({});
    s.sendTurn(user(args.text!));
    s.sendTurn(assistant("Mix flour, water, salt and yeast, then bake."));
    const responses: StreamClassifyResponse[] = [];
    try {
      s.closeSend();
      for await (const r of s) responses.push(r);
      stream.status = "OK";
      console.log(`stream: OK, ${responses.length} responses`);
    } catch (e) {
      const err = GuardError.from(e);
      stream.status = err.codeName;
      stream.error = err.toJSON();
      if (err.codeName === "UNIMPLEMENTED") {
        console.log(`stream: server does not implement StreamClassify yet: ${err.message}`);
      } else {
        console.log(`stream: failed: ${err.message}`);
        failed = true;
      }
    }
    stream.responses = responses.map((r) => ({
      sequence: Number(r.sequence),
      verdict: `VERDICT_${Verdict[r.result?.verdict ?? 0]}`,
      outcome: streamDecision(r).outcome,
      final: r.final,
      turn_index: r.turnIndex,
    }));
    result.stream = stream;

    // 3. A validation error: an empty conversation.
    try {
      await guard.classify([]);
      console.log("validation error: none (unexpected)");
      result.validation_error = null;
      failed = true;
    } catch (e) {
      const err = e as GuardError; // classify only throws GuardError
      console.log(`validation error: code=${err.codeName} reason=${err.reason} domain=${err.domain}`);
      for (const v of err.fieldViolations) console.log(`  field violation: ${v.field}: ${v.description}`);
      result.validation_error = err.toJSON();
      if (err.codeName !== "INVALID_ARGUMENT") failed = true;
    }

    // 4. Optional: a guard that is down is UNAVAILABLE, never SAFE.
    if (args["down-addr"]) {
      const down = new GuardClient(args["down-addr"], { timeoutMs });
      try {
        const dd = await down.check(args.text!);
        console.log(`guard down: outcome=${dd.outcome} allowed(fail-closed)=${allowed(dd, FailMode.CLOSED)}` +
          ` allowed(fail-open)=${allowed(dd, FailMode.OPEN)}`);
        if (dd.outcome !== Outcome.UNAVAILABLE) failed = true;
        result.down = decisionJSON(dd);
      } finally {
        down.close();
      }
    }
  } finally {
    guard.close();
  }
  console.log(`RESULT ${JSON.stringify(result)}`);
  return failed ? 1 : 0;
}

main().then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(err); process.exitCode = 2; },
);
