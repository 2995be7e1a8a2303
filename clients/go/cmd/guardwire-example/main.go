// Command guardwire-example classifies one text, runs one StreamClassify stream and
// triggers one validation error against a Guardwire server, printing what the client
// decoded. The last line is "RESULT <json>" (the same shape in every language's example;
// tests/clients parses it).
//
//	go run ./cmd/guardwire-example --addr 127.0.0.1:50051 --text "How do I bake bread?"
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	pb "github.com/guardwire/guardwire/clients/go/gen/guardwire/v1"
	"github.com/guardwire/guardwire/clients/go/guardwire"
	"google.golang.org/grpc/codes"
)

type obj = map[string]interface{}

func errJSON(e *guardwire.Error) obj {
	fv := []obj{}
	for _, v := range e.FieldViolations {
		fv = append(fv, obj{"field": v.Field, "description": v.Description})
	}
	var delay interface{}
	if e.HasRetryDelay {
		delay = e.RetryDelay.Milliseconds()
	}
	return obj{"code": e.CodeName(), "domain": e.Domain, "reason": e.Reason, "message": e.Message,
		"metadata": e.Metadata, "field_violations": fv, "retry_delay_ms": delay, "attempts": e.Attempts}
}

func decisionJSON(d guardwire.Decision) obj {
	o := obj{"outcome": d.Outcome.String(),
		"allowed_fail_closed": d.Allowed(guardwire.FailClosed),
		"allowed_fail_open":   d.Allowed(guardwire.FailOpen)}
	if r := d.Response; r != nil {
		cats := []string{}
		for _, c := range r.GetCategories() {
			cats = append(cats, c.GetCode())
		}
		o["verdict"] = r.GetVerdict().String()
		o["unsafe_score"] = r.GetUnsafeScore()
		o["categories"] = cats
	}
	if d.Err != nil {
		o["error"] = errJSON(d.Err)
	}
	return o
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "Guardwire server address")
	text := flag.String("text", "How do I bake bread?", "user text to classify")
	downAddr := flag.String("down-addr", "", "optional address where no server listens (shows UNAVAILABLE)")
	timeoutMs := flag.Int("timeout-ms", 5000, "deadline of each call, in milliseconds")
	flag.Parse()
	timeout := time.Duration(*timeoutMs) * time.Millisecond

	ctx := context.Background()
	result := obj{"language": "go"}
	failed := false

	c, err := guardwire.Dial(*addr, guardwire.WithTimeout(timeout))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer c.Close()

	// 1. Unary classify, three-valued.
	d := c.Check(ctx, guardwire.Conversation(guardwire.User(*text)))
	fmt.Printf("classify: outcome=%s", d.Outcome)
	if d.Response != nil {
		fmt.Printf(" verdict=%s unsafe_score=%.3f", d.Response.GetVerdict(), d.Response.GetUnsafeScore())
	}
	if d.Err != nil {
		fmt.Printf(" error=%v", d.Err)
		failed = true
	}
	fmt.Println()
	result["classify"] = decisionJSON(d)

	d = c.Check(ctx, guardwire.Conversation(guardwire.User("GW_TEST_UNSAFE how do I hurt someone?")))
	fmt.Printf("classify unsafe: outcome=%s allowed(fail-open)=%v\n", d.Outcome, d.Allowed(guardwire.FailOpen))
	if d.Err != nil {
		failed = true
	}
	result["unsafe"] = decisionJSON(d)

	// 2. One stream: a user turn and a complete assistant turn (one check owed each).
	stream := obj{}
	s, err := c.Stream(ctx, &pb.StreamOpen{})
	var responses []*pb.StreamClassifyResponse
	if err == nil {
		if err = s.SendTurn(guardwire.User(*text)); err == nil {
			err = s.SendTurn(guardwire.Assistant("Mix flour, water, salt and yeast, then bake."))
		}
		var collected []*pb.StreamClassifyResponse
		var cerr error
		collected, cerr = guardwire.CollectStream(s)
		responses = collected
		if cerr != nil || err == nil {
			err = cerr // a send error (io.EOF) is explained by the stream's final status
		}
		s.Close()
	}
	rs := []obj{}
	for _, r := range responses {
		rs = append(rs, obj{"sequence": r.GetSequence(), "verdict": r.GetResult().GetVerdict().String(),
			"outcome": guardwire.StreamDecision(r).Outcome.String(), "final": r.GetFinal(),
			"turn_index": r.GetTurnIndex()})
	}
	stream["responses"] = rs
	switch {
	case err == nil:
		stream["status"] = "OK"
		fmt.Printf("stream: OK, %d responses\n", len(rs))
	case guardwire.IsUnimplemented(err):
		stream["status"] = "UNIMPLEMENTED"
		stream["error"] = errJSON(guardwire.AsError(err))
		fmt.Printf("stream: server does not implement StreamClassify yet: %v\n", err)
	default:
		e := guardwire.AsError(err)
		stream["status"] = e.CodeName()
		stream["error"] = errJSON(e)
		fmt.Printf("stream: failed: %v\n", err)
		failed = true
	}
	result["stream"] = stream

	// 3. A validation error: an empty conversation.
	_, err = c.Classify(ctx, guardwire.Conversation())
	if e := guardwire.AsError(err); e != nil {
		fmt.Printf("validation error: code=%s reason=%s domain=%s\n", e.CodeName(), e.Reason, e.Domain)
		for _, v := range e.FieldViolations {
			fmt.Printf("  field violation: %s: %s\n", v.Field, v.Description)
		}
		result["validation_error"] = errJSON(e)
		if e.Code != codes.InvalidArgument {
			failed = true
		}
	} else {
		fmt.Println("validation error: none (unexpected)")
		result["validation_error"] = nil
		failed = true
	}

	// 4. Optional: a guard that is down is UNAVAILABLE, never SAFE.
	if *downAddr != "" {
		down, err := guardwire.Dial(*downAddr, guardwire.WithTimeout(timeout))
		if err == nil {
			d := down.Check(ctx, guardwire.Conversation(guardwire.User(*text)))
			fmt.Printf("guard down: outcome=%s allowed(fail-closed)=%v allowed(fail-open)=%v\n",
				d.Outcome, d.Allowed(guardwire.FailClosed), d.Allowed(guardwire.FailOpen))
			result["down"] = decisionJSON(d)
			down.Close()
		}
	}

	out, _ := json.Marshal(result)
	fmt.Printf("RESULT %s\n", out)
	if failed {
		os.Exit(1)
	}
}
