package guardwire

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo.domain of every error the Guardwire server returns.
const Domain = "guardwire.v1"

// FieldViolation is one google.rpc.BadRequest field violation: the request field
// (e.g. "conversation.turns") and what is wrong with it.
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a failed RPC decoded from its google.rpc.Status: the gRPC code, and the
// ErrorInfo / BadRequest / RetryInfo details the server attached.
//
// Every error returned by this package is an *Error (use errors.As, or AsError).
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the status message.
	Message string
	// Domain is ErrorInfo.domain ("guardwire.v1" for server errors; "" when the error
	// came from the transport, e.g. connection refused, and carries no ErrorInfo).
	Domain string
	// Reason is ErrorInfo.reason: the name of a guardwire.v1.ErrorReason value such as
	// "INVALID_REQUEST" or "OVERLOADED" ("" when there was no ErrorInfo).
	Reason string
	// Metadata is ErrorInfo.metadata (never nil).
	Metadata map[string]string
	// FieldViolations lists google.rpc.BadRequest's violations (INVALID_ARGUMENT).
	FieldViolations []FieldViolation
	// RetryDelay is google.rpc.RetryInfo.retry_delay; HasRetryDelay says whether it was sent.
	RetryDelay    time.Duration
	HasRetryDelay bool
	// Attempts is how many times the call was tried (1 when not retried).
	Attempts int
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "guardwire: %s", CodeName(e.Code))
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	for _, v := range e.FieldViolations {
		fmt.Fprintf(&b, "; %s: %s", v.Field, v.Description)
	}
	if e.HasRetryDelay {
		fmt.Fprintf(&b, "; retry after %s", e.RetryDelay)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// GRPCStatus lets status.FromError / status.Code see the original code.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// CodeName is the canonical name of the code, e.g. "INVALID_ARGUMENT".
func (e *Error) CodeName() string { return CodeName(e.Code) }

// Retryable reports whether the call may be retried unchanged: UNAVAILABLE and
// RESOURCE_EXHAUSTED (the codes the client retries automatically).
func (e *Error) Retryable() bool {
	return e.Code == codes.Unavailable || e.Code == codes.ResourceExhausted
}

// AsError returns err as an *Error, decoding a gRPC status error if needed. It returns
// nil for a nil err.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return fromError(err)
}

func fromError(err error) *Error {
	e := &Error{Metadata: map[string]string{}, Attempts: 1}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		e.Code, e.Message = codes.DeadlineExceeded, err.Error()
		return e
	case errors.Is(err, context.Canceled):
		e.Code, e.Message = codes.Canceled, err.Error()
		return e
	}
	st, ok := status.FromError(err)
	if !ok {
		e.Code, e.Message = codes.Unknown, err.Error()
		return e
	}
	e.Code, e.Message = st.Code(), st.Message()
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			e.Domain, e.Reason = d.GetDomain(), d.GetReason()
			for k, v := range d.GetMetadata() {
				e.Metadata[k] = v
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{v.GetField(), v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			if rd := d.GetRetryDelay(); rd != nil {
				e.RetryDelay = time.Duration(rd.GetSeconds())*time.Second + time.Duration(rd.GetNanos())
				e.HasRetryDelay = true
			}
		}
	}
	return e
}

var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}

// CodeName is the canonical (upper snake case) name of a gRPC code.
func CodeName(c codes.Code) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CODE(%d)", uint32(c))
}
