// Package guardwire is a thin client for the Guardwire guard sidecar (gRPC service
// guardwire.v1.GuardService) over the generated stubs in gen/guardwire/v1.
//
// It adds what every caller needs: a deadline on every call, errors decoded from
// google.rpc.Status details (*Error), bounded retries on UNAVAILABLE and
// RESOURCE_EXHAUSTED that honour RetryInfo, and a three-valued Decision (SAFE, UNSAFE,
// UNAVAILABLE) so that a guard that is down is never mistaken for a safe verdict.
//
//	c, _ := guardwire.Dial("127.0.0.1:50051")
//	defer c.Close()
//	d := c.Check(ctx, guardwire.Conversation(guardwire.User("hello")))
//	if !d.Allowed(guardwire.FailClosed) { /* block */ }
package guardwire

import (
	"context"
	"math/rand"
	"time"

	pb "github.com/guardwire/guardwire/clients/go/gen/guardwire/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// RetryPolicy bounds the automatic retries of Classify and ModelInfo. Only UNAVAILABLE
// and RESOURCE_EXHAUSTED are retried. The delay before a retry is the server's
// RetryInfo delay when it sent one, else an exponential backoff with full jitter.
// Retries never outlive the call's deadline.
type RetryPolicy struct {
	// MaxAttempts is the total number of tries, including the first (>= 1).
	MaxAttempts int
	// InitialBackoff and MaxBackoff bound the backoff used without RetryInfo.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// MaxRetryDelay caps a server-sent RetryInfo delay; a longer one is not waited for
	// (the error is returned).
	MaxRetryDelay time.Duration
}

// DefaultRetryPolicy: 3 attempts, 50 ms initial backoff, 1 s max backoff, RetryInfo up to 5 s.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 3, InitialBackoff: 50 * time.Millisecond,
	MaxBackoff: time.Second, MaxRetryDelay: 5 * time.Second}

// DefaultTimeout is the deadline of a call (all its attempts together) when the context
// has none.
const DefaultTimeout = 2 * time.Second

// Option configures a Client.
type Option func(*Client)

// WithTimeout sets the default deadline of each call (used when ctx has no deadline).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option { return func(c *Client) { c.retry = p } }

// WithDialOptions adds grpc.DialOptions (Dial only). Without any, the connection is
// plaintext (a sidecar on loopback).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *Client) { c.dialOpts = append(c.dialOpts, opts...) }
}

// Client calls a Guardwire server. It is safe for concurrent use.
type Client struct {
	conn     *grpc.ClientConn
	stub     pb.GuardServiceClient
	timeout  time.Duration
	retry    RetryPolicy
	dialOpts []grpc.DialOption
}

// Dial connects (lazily) to target, e.g. "127.0.0.1:50051".
func Dial(target string, opts ...Option) (*Client, error) {
	c := newClient(opts)
	dialOpts := c.dialOpts
	if len(dialOpts) == 0 {
		// grpc-go 1.33 (Debian) has no credentials/insecure; WithInsecure is the equivalent.
		dialOpts = []grpc.DialOption{grpc.WithInsecure()}
	}
	conn, err := grpc.Dial(target, dialOpts...)
	if err != nil {
		return nil, AsError(err)
	}
	c.conn = conn
	c.stub = pb.NewGuardServiceClient(conn)
	return c, nil
}

// NewClient wraps an existing connection (the caller keeps ownership of it).
func NewClient(conn grpc.ClientConnInterface, opts ...Option) *Client {
	c := newClient(opts)
	c.stub = pb.NewGuardServiceClient(conn)
	return c
}

func newClient(opts []Option) *Client {
	c := &Client{timeout: DefaultTimeout, retry: DefaultRetryPolicy}
	for _, o := range opts {
		o(c)
	}
	if c.retry.MaxAttempts < 1 {
		c.retry.MaxAttempts = 1
	}
	return c
}

// Close closes the connection made by Dial.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Stub is the generated client, for calls this wrapper does not cover.
func (c *Client) Stub() pb.GuardServiceClient { return c.stub }

// User is a ROLE_USER turn.
func User(text string) *pb.Turn { return &pb.Turn{Role: pb.Role_ROLE_USER, Content: text} }

// Assistant is a ROLE_ASSISTANT turn.
func Assistant(text string) *pb.Turn { return &pb.Turn{Role: pb.Role_ROLE_ASSISTANT, Content: text} }

// Conversation builds a conversation from turns, oldest first.
func Conversation(turns ...*pb.Turn) *pb.Conversation { return &pb.Conversation{Turns: turns} }

// ClassifyOption sets an optional field of the ClassifyRequest.
type ClassifyOption func(*pb.ClassifyRequest)

// WithThreshold sets options.threshold.
func WithThreshold(t float32) ClassifyOption {
	return func(r *pb.ClassifyRequest) { options(r).Threshold = &t }
}

// WithCategoryScores sets options.include_category_scores.
func WithCategoryScores() ClassifyOption {
	return func(r *pb.ClassifyRequest) { options(r).IncludeCategoryScores = true }
}

// WithPolicy sets the policy.
func WithPolicy(p *pb.Policy) ClassifyOption { return func(r *pb.ClassifyRequest) { r.Policy = p } }

// WithRole sets the role whose last turn is assessed.
func WithRole(role pb.Role) ClassifyOption { return func(r *pb.ClassifyRequest) { r.Role = role } }

func options(r *pb.ClassifyRequest) *pb.ClassifyOptions {
	if r.Options == nil {
		r.Options = &pb.ClassifyOptions{}
	}
	return r.Options
}

// Classify classifies the last turn of conv. Errors are *Error. The call has the
// client's timeout unless ctx has a deadline, and is retried per the RetryPolicy.
func (c *Client) Classify(ctx context.Context, conv *pb.Conversation, opts ...ClassifyOption) (*pb.ClassifyResponse, error) {
	req := &pb.ClassifyRequest{Conversation: conv}
	for _, o := range opts {
		o(req)
	}
	return c.ClassifyRequest(ctx, req)
}

// ClassifyRequest sends a full ClassifyRequest (see Classify).
func (c *Client) ClassifyRequest(ctx context.Context, req *pb.ClassifyRequest) (*pb.ClassifyResponse, error) {
	var resp *pb.ClassifyResponse
	err := c.withRetry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.stub.Classify(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Check is Classify with a three-valued answer: it never returns an error, and any
// failure (guard down, overloaded, timed out, bad request) is OutcomeUnavailable with
// the *Error in Decision.Err. The caller chooses fail-open or fail-closed with Allowed.
func (c *Client) Check(ctx context.Context, conv *pb.Conversation, opts ...ClassifyOption) Decision {
	resp, err := c.Classify(ctx, conv, opts...)
	return DecisionOf(resp, err)
}

// ModelInfo describes the served model (retried like Classify).
func (c *Client) ModelInfo(ctx context.Context) (*pb.GetModelInfoResponse, error) {
	var resp *pb.GetModelInfoResponse
	err := c.withRetry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.stub.GetModelInfo(ctx, &pb.GetModelInfoRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

func (c *Client) withRetry(ctx context.Context, call func(context.Context) error) error {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	p := c.retry
	backoff := p.InitialBackoff
	for attempt := 1; ; attempt++ {
		err := call(ctx)
		if err == nil {
			return nil
		}
		e := AsError(err)
		e.Attempts = attempt
		if !e.Retryable() || attempt >= p.MaxAttempts {
			return e
		}
		var delay time.Duration
		if e.HasRetryDelay {
			if p.MaxRetryDelay > 0 && e.RetryDelay > p.MaxRetryDelay {
				return e
			}
			delay = e.RetryDelay
		} else {
			delay = time.Duration(rand.Int63n(int64(backoff) + 1))
			if backoff *= 2; backoff > p.MaxBackoff {
				backoff = p.MaxBackoff
			}
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= delay {
			return e // the retry could not finish before the deadline
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return e
		case <-t.C:
		}
	}
}

// IsUnimplemented reports whether err is an UNIMPLEMENTED status (e.g. a server
// without StreamClassify).
func IsUnimplemented(err error) bool {
	e := AsError(err)
	return e != nil && e.Code == codes.Unimplemented
}
