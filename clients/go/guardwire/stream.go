package guardwire

import (
	"context"
	"errors"
	"io"

	pb "github.com/guardwire/guardwire/clients/go/gen/guardwire/v1"
)

// Stream is one StreamClassify conversation (bidirectional). Send methods and Recv may
// be used from two goroutines (one sending, one receiving). Streams are not retried
// automatically: the server holds per-stream state, so after an error open a new one.
type Stream struct {
	s      pb.GuardService_StreamClassifyClient
	cancel context.CancelFunc
}

// Stream opens a StreamClassify stream and sends `open` as its first message. The
// stream's deadline (the client's timeout unless ctx has one) bounds the whole
// conversation. Call Close (or cancel ctx) when done.
//
// An UNIMPLEMENTED server (StreamClassify not deployed) is reported by Recv as an
// *Error with Code codes.Unimplemented (see IsUnimplemented).
func (c *Client) Stream(ctx context.Context, open *pb.StreamOpen) (*Stream, error) {
	if open == nil {
		open = &pb.StreamOpen{}
	}
	ctx, cancel := c.withDeadline(ctx)
	s, err := c.stub.StreamClassify(ctx)
	if err != nil {
		cancel()
		return nil, AsError(err)
	}
	st := &Stream{s: s, cancel: cancel}
	// io.EOF here means the server already ended the stream: Recv reports its status.
	if err := st.send(&pb.StreamClassifyRequest{Kind: &pb.StreamClassifyRequest_Open{Open: open}}); err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, err
	}
	return st, nil
}

// send returns nil, or io.EOF when the server already ended the stream (its status is
// then returned by Recv), or an *Error.
func (s *Stream) send(m *pb.StreamClassifyRequest) error {
	err := s.s.Send(m)
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return AsError(err)
}

// SendTurn sends a complete turn (one check is owed).
func (s *Stream) SendTurn(t *pb.Turn) error {
	return s.send(&pb.StreamClassifyRequest{Kind: &pb.StreamClassifyRequest_Turn{Turn: t}})
}

// SendDelta appends text to the assistant response being generated.
func (s *Stream) SendDelta(text string) error {
	return s.send(&pb.StreamClassifyRequest{Kind: &pb.StreamClassifyRequest_Delta{Delta: &pb.ResponseDelta{Text: text}}})
}

// CheckNow asks for a verdict on the conversation so far.
func (s *Stream) CheckNow() error {
	return s.send(&pb.StreamClassifyRequest{Kind: &pb.StreamClassifyRequest_Check{Check: &pb.CheckNow{}}})
}

// EndOfTurn closes the assistant response being generated.
func (s *Stream) EndOfTurn() error {
	return s.send(&pb.StreamClassifyRequest{Kind: &pb.StreamClassifyRequest_EndOfTurn{EndOfTurn: &pb.EndOfTurn{}}})
}

// CloseSend half-closes: the server answers every owed check, then ends the stream.
func (s *Stream) CloseSend() error { return s.s.CloseSend() }

// Recv returns the next response; io.EOF after a clean end, else an *Error.
func (s *Stream) Recv() (*pb.StreamClassifyResponse, error) {
	m, err := s.s.Recv()
	if err == nil {
		return m, nil
	}
	if errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	return nil, AsError(err)
}

// Close cancels the stream (dropping unanswered checks) and releases its resources.
func (s *Stream) Close() { s.cancel() }

// StreamDecision maps a stream response to a three-valued Decision.
func StreamDecision(r *pb.StreamClassifyResponse) Decision { return DecisionOf(r.GetResult(), nil) }

// CollectStream half-closes s and reads every remaining response until the end of the
// stream. It returns the responses and nil after a clean end, or the ones received
// before the *Error that ended the stream.
func CollectStream(s *Stream) ([]*pb.StreamClassifyResponse, error) {
	_ = s.CloseSend()
	var out []*pb.StreamClassifyResponse
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}
