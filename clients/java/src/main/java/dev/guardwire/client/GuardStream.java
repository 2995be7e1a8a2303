package dev.guardwire.client;

import dev.guardwire.v1.CheckNow;
import dev.guardwire.v1.EndOfTurn;
import dev.guardwire.v1.GuardServiceGrpc;
import dev.guardwire.v1.ResponseDelta;
import dev.guardwire.v1.StreamClassifyRequest;
import dev.guardwire.v1.StreamClassifyResponse;
import dev.guardwire.v1.StreamOpen;
import dev.guardwire.v1.Turn;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;

/**
 * One StreamClassify stream (bidirectional). Send from one thread with sendTurn / sendDelta
 * / checkNow / endOfTurn, then closeSend(); read with {@link #next()} (blocking) or
 * {@link #collect()}. An error that ends the stream is thrown as {@link GuardException}
 * (code UNIMPLEMENTED when the server does not serve StreamClassify).
 */
public final class GuardStream implements AutoCloseable {
  private record Event(StreamClassifyResponse response, Throwable error, boolean done) {}

  private final LinkedBlockingQueue<Event> events = new LinkedBlockingQueue<>();
  private final io.grpc.stub.StreamObserver<StreamClassifyRequest> requests;
  private volatile ClientCallStreamObserver<StreamClassifyRequest> call;
  private boolean finished;
  private boolean halfClosed;

  GuardStream(GuardServiceGrpc.GuardServiceStub stub, StreamOpen open) {
    this.requests = stub.streamClassify(new ClientResponseObserver<StreamClassifyRequest, StreamClassifyResponse>() {
      @Override
      public void beforeStart(ClientCallStreamObserver<StreamClassifyRequest> requestStream) {
        call = requestStream;
      }

      @Override
      public void onNext(StreamClassifyResponse value) {
        events.add(new Event(value, null, false));
      }

      @Override
      public void onError(Throwable t) {
        events.add(new Event(null, t, true));
      }

      @Override
      public void onCompleted() {
        events.add(new Event(null, null, true));
      }
    });
    send(StreamClassifyRequest.newBuilder().setOpen(open).build());
  }

  private void send(StreamClassifyRequest m) {
    if (halfClosed) {
      throw new IllegalStateException("stream already half-closed");
    }
    requests.onNext(m);
  }

  /** A complete turn (one check is owed). */
  public void sendTurn(Turn turn) {
    send(StreamClassifyRequest.newBuilder().setTurn(turn).build());
  }

  /** A piece of the assistant response being generated. */
  public void sendDelta(String text) {
    send(StreamClassifyRequest.newBuilder().setDelta(ResponseDelta.newBuilder().setText(text)).build());
  }

  /** Asks for a verdict on the conversation so far. */
  public void checkNow() {
    send(StreamClassifyRequest.newBuilder().setCheck(CheckNow.getDefaultInstance()).build());
  }

  /** Closes the assistant response being generated. */
  public void endOfTurn() {
    send(StreamClassifyRequest.newBuilder().setEndOfTurn(EndOfTurn.getDefaultInstance()).build());
  }

  /** Half-close: the server answers every owed check, then ends the stream. */
  public void closeSend() {
    if (!halfClosed) {
      halfClosed = true;
      requests.onCompleted();
    }
  }

  /**
   * The next response, blocking; null after a clean end of the stream.
   *
   * @throws GuardException when the stream ended with an error
   */
  public StreamClassifyResponse next() {
    if (finished) {
      return null;
    }
    Event e;
    try {
      e = events.take();
    } catch (InterruptedException ie) {
      Thread.currentThread().interrupt();
      cancel();
      throw GuardException.from(ie);
    }
    if (e.done()) {
      finished = true;
      if (e.error() != null) {
        throw GuardException.from(e.error());
      }
      return null;
    }
    return e.response();
  }

  /** Half-closes, then returns every remaining response (throws GuardException on error). */
  public List<StreamClassifyResponse> collect() {
    closeSend();
    List<StreamClassifyResponse> out = new ArrayList<>();
    for (StreamClassifyResponse r = next(); r != null; r = next()) {
      out.add(r);
    }
    return out;
  }

  /** Cancels the stream; unanswered checks are dropped. */
  public void cancel() {
    ClientCallStreamObserver<StreamClassifyRequest> c = call;
    if (c != null && !finished) {
      c.cancel("cancelled by the client", null);
    }
  }

  /** Maps a stream response to a three-valued Decision. */
  public static Decision decision(StreamClassifyResponse r) {
    return Decision.of(r.getResult());
  }

  @Override
  public void close() {
    cancel();
  }
}
