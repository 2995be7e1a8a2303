package guardwire

import (
	pb "github.com/guardwire/guardwire/clients/go/gen/guardwire/v1"
	"google.golang.org/grpc/codes"
)

// Outcome is the three-valued result of a check. The zero value is
// OutcomeUnavailable, so an unset Outcome is never "safe".
type Outcome int

const (
	// OutcomeUnavailable: no verdict (guard down, overloaded, timed out, rejected the
	// request, or answered VERDICT_UNSPECIFIED). Never treat it as safe implicitly.
	OutcomeUnavailable Outcome = iota
	// OutcomeSafe: the guard model judged the turn safe.
	OutcomeSafe
	// OutcomeUnsafe: the guard model judged the turn unsafe.
	OutcomeUnsafe
)

func (o Outcome) String() string {
	switch o {
	case OutcomeSafe:
		return "SAFE"
	case OutcomeUnsafe:
		return "UNSAFE"
	default:
		return "UNAVAILABLE"
	}
}

// FailMode is the caller's explicit choice for OutcomeUnavailable.
type FailMode int

const (
	// FailClosed blocks when there is no verdict (the zero value).
	FailClosed FailMode = iota
	// FailOpen lets the content through when there is no verdict.
	FailOpen
)

// Decision is the result of Client.Check.
type Decision struct {
	Outcome Outcome
	// Response is the server's answer (nil when Outcome is OutcomeUnavailable, except
	// for a VERDICT_UNSPECIFIED answer).
	Response *pb.ClassifyResponse
	// Err says why there is no verdict (nil unless OutcomeUnavailable).
	Err *Error
}

// Allowed says whether the content may pass: SAFE yes, UNSAFE no, UNAVAILABLE as mode says.
func (d Decision) Allowed(mode FailMode) bool {
	switch d.Outcome {
	case OutcomeSafe:
		return true
	case OutcomeUnsafe:
		return false
	default:
		return mode == FailOpen
	}
}

// DecisionOf maps a Classify result to a Decision.
func DecisionOf(resp *pb.ClassifyResponse, err error) Decision {
	if err != nil {
		return Decision{Outcome: OutcomeUnavailable, Err: AsError(err)}
	}
	switch resp.GetVerdict() {
	case pb.Verdict_VERDICT_SAFE:
		return Decision{Outcome: OutcomeSafe, Response: resp}
	case pb.Verdict_VERDICT_UNSAFE:
		return Decision{Outcome: OutcomeUnsafe, Response: resp}
	default:
		return Decision{Outcome: OutcomeUnavailable, Response: resp, Err: &Error{
			Code: codes.Unknown, Message: "server answered VERDICT_UNSPECIFIED",
			Metadata: map[string]string{}, Attempts: 1}}
	}
}
