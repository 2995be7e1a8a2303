package guardwire

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/guardwire/guardwire/clients/go/gen/guardwire/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func richError(t *testing.T) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "queue full").WithDetails(
		&errdetails.ErrorInfo{Domain: Domain, Reason: "OVERLOADED", Metadata: map[string]string{"queue_limit": "4"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "f", Description: "d"}}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(250 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestAsErrorDecodesDetails(t *testing.T) {
	e := AsError(richError(t))
	if e.Code != codes.ResourceExhausted || e.Reason != "OVERLOADED" || e.Domain != Domain {
		t.Fatalf("decoded %+v", e)
	}
	if e.Metadata["queue_limit"] != "4" || len(e.FieldViolations) != 1 || e.FieldViolations[0].Field != "f" {
		t.Fatalf("decoded %+v", e)
	}
	if !e.HasRetryDelay || e.RetryDelay != 250*time.Millisecond || !e.Retryable() {
		t.Fatalf("decoded %+v", e)
	}
	var target *Error
	if !errors.As(error(e), &target) || status.Code(e) != codes.ResourceExhausted {
		t.Fatal("*Error must work with errors.As and status.Code")
	}
}

func TestDecisionIsThreeValued(t *testing.T) {
	var zero Decision
	if zero.Outcome != OutcomeUnavailable || zero.Allowed(FailClosed) {
		t.Fatal("the zero Decision must be UNAVAILABLE and blocked when failing closed")
	}
	cases := []struct {
		resp        *pb.ClassifyResponse
		err         error
		want        Outcome
		open, close bool
	}{
		{&pb.ClassifyResponse{Verdict: pb.Verdict_VERDICT_SAFE}, nil, OutcomeSafe, true, true},
		{&pb.ClassifyResponse{Verdict: pb.Verdict_VERDICT_UNSAFE}, nil, OutcomeUnsafe, false, false},
		{&pb.ClassifyResponse{}, nil, OutcomeUnavailable, true, false}, // VERDICT_UNSPECIFIED
		{nil, status.Error(codes.Unavailable, "down"), OutcomeUnavailable, true, false},
	}
	for _, c := range cases {
		d := DecisionOf(c.resp, c.err)
		if d.Outcome != c.want || d.Allowed(FailOpen) != c.open || d.Allowed(FailClosed) != c.close {
			t.Errorf("DecisionOf(%v, %v) = %v", c.resp, c.err, d)
		}
	}
}

// fakeConn answers every Classify with the queued errors, then success.
type fakeConn struct {
	errs  []error
	calls []time.Time
}

func (f *fakeConn) Invoke(ctx context.Context, method string, args, reply interface{}, opts ...grpc.CallOption) error {
	f.calls = append(f.calls, time.Now())
	if len(f.calls) <= len(f.errs) {
		return f.errs[len(f.calls)-1]
	}
	reply.(*pb.ClassifyResponse).Verdict = pb.Verdict_VERDICT_SAFE
	return nil
}

func (f *fakeConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "no streams")
}

func TestRetryHonoursRetryInfoAndIsBounded(t *testing.T) {
	conn := &fakeConn{errs: []error{richError(t), richError(t)}}
	c := NewClient(conn, WithTimeout(5*time.Second))
	if _, err := c.Classify(context.Background(), Conversation(User("x"))); err != nil {
		t.Fatal(err)
	}
	if len(conn.calls) != 3 {
		t.Fatalf("%d calls, want 3", len(conn.calls))
	}
	for i := 1; i < 3; i++ {
		if gap := conn.calls[i].Sub(conn.calls[i-1]); gap < 250*time.Millisecond {
			t.Fatalf("retry %d after %v, before RetryInfo's 250ms", i, gap)
		}
	}

	conn = &fakeConn{errs: []error{richError(t), richError(t), richError(t), richError(t)}}
	c = NewClient(conn, WithTimeout(5*time.Second))
	_, err := c.Classify(context.Background(), Conversation(User("x")))
	if e := AsError(err); e == nil || e.Attempts != 3 || len(conn.calls) != 3 {
		t.Fatalf("want 3 bounded attempts, got %v after %d calls", err, len(conn.calls))
	}

	conn = &fakeConn{errs: []error{status.Error(codes.InvalidArgument, "bad")}}
	c = NewClient(conn)
	if _, err := c.Classify(context.Background(), Conversation()); AsError(err).Code != codes.InvalidArgument || len(conn.calls) != 1 {
		t.Fatalf("INVALID_ARGUMENT must not be retried: %v, %d calls", err, len(conn.calls))
	}
}
