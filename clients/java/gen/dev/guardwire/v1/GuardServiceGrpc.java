package dev.guardwire.v1;

import static io.grpc.MethodDescriptor.generateFullMethodName;

/**
 * <pre>
 * GuardService classifies chat turns with an LLM safety classifier (a guard
 * model such as Llama Guard) running next to the caller.
 * Errors of every RPC are `google.rpc.Status` values carrying a
 * `google.rpc.ErrorInfo` (domain "guardwire.v1", reason from ErrorReason);
 * see error_reason.proto. Common to all RPCs:
 * - UNAVAILABLE (MODEL_NOT_READY, DRAINING): retry with exponential backoff,
 *   or on another replica.
 * - RESOURCE_EXHAUSTED (OVERLOADED): retry after the delay in RetryInfo.
 * - DEADLINE_EXCEEDED (DEADLINE_EXPIRED): the request was dropped before
 *   inference; nothing was scored.
 * - INTERNAL (BACKEND_FAILURE, INTERNAL_ERROR): retry once.
 * A client must never treat an error as a SAFE verdict.
 * </pre>
 */
@javax.annotation.Generated(
    value = "by gRPC proto compiler",
    comments = "Source: guardwire/v1/guard_service.proto")
@io.grpc.stub.annotations.GrpcGenerated
public final class GuardServiceGrpc {

  private GuardServiceGrpc() {}

  public static final String SERVICE_NAME = "guardwire.v1.GuardService";

  // Static method descriptors that strictly reflect the proto.
  private static volatile io.grpc.MethodDescriptor<dev.guardwire.v1.ClassifyRequest,
      dev.guardwire.v1.ClassifyResponse> getClassifyMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Classify",
      requestType = dev.guardwire.v1.ClassifyRequest.class,
      responseType = dev.guardwire.v1.ClassifyResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.guardwire.v1.ClassifyRequest,
      dev.guardwire.v1.ClassifyResponse> getClassifyMethod() {
    io.grpc.MethodDescriptor<dev.guardwire.v1.ClassifyRequest, dev.guardwire.v1.ClassifyResponse> getClassifyMethod;
    if ((getClassifyMethod = GuardServiceGrpc.getClassifyMethod) == null) {
      synchronized (GuardServiceGrpc.class) {
        if ((getClassifyMethod = GuardServiceGrpc.getClassifyMethod) == null) {
          GuardServiceGrpc.getClassifyMethod = getClassifyMethod =
              io.grpc.MethodDescriptor.<dev.guardwire.v1.ClassifyRequest, dev.guardwire.v1.ClassifyResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Classify"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.guardwire.v1.ClassifyRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.guardwire.v1.ClassifyResponse.getDefaultInstance()))
              .setSchemaDescriptor(new GuardServiceMethodDescriptorSupplier("Classify"))
              .build();
        }
      }
    }
    return getClassifyMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.guardwire.v1.StreamClassifyRequest,
      dev.guardwire.v1.StreamClassifyResponse> getStreamClassifyMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "StreamClassify",
      requestType = dev.guardwire.v1.StreamClassifyRequest.class,
      responseType = dev.guardwire.v1.StreamClassifyResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.BIDI_STREAMING)
  public static io.grpc.MethodDescriptor<dev.guardwire.v1.StreamClassifyRequest,
      dev.guardwire.v1.StreamClassifyResponse> getStreamClassifyMethod() {
    io.grpc.MethodDescriptor<dev.guardwire.v1.StreamClassifyRequest, dev.guardwire.v1.StreamClassifyResponse> getStreamClassifyMethod;
    if ((getStreamClassifyMethod = GuardServiceGrpc.getStreamClassifyMethod) == null) {
      synchronized (GuardServiceGrpc.class) {
        if ((getStreamClassifyMethod = GuardServiceGrpc.getStreamClassifyMethod) == null) {
          GuardServiceGrpc.getStreamClassifyMethod = getStreamClassifyMethod =
              io.grpc.MethodDescriptor.<dev.guardwire.v1.StreamClassifyRequest, dev.guardwire.v1.StreamClassifyResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.BIDI_STREAMING)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "StreamClassify"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.guardwire.v1.StreamClassifyRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.guardwire.v1.StreamClassifyResponse.getDefaultInstance()))
              .setSchemaDescriptor(new GuardServiceMethodDescriptorSupplier("StreamClassify"))
              .build();
        }
      }
    }
    return getStreamClassifyMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.guardwire.v1.GetModelInfoRequest,
      dev.guardwire.v1.GetModelInfoResponse> getGetModelInfoMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "GetModelInfo",
      requestType = dev.guardwire.v1.GetModelInfoRequest.class,
      responseType = dev.guardwire.v1.GetModelInfoResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.guardwire.v1.GetModelInfoRequest,
      dev.guardwire.v1.GetModelInfoResponse> getGetModelInfoMethod() {
    io.grpc.MethodDescriptor<dev.guardwire.v1.GetModelInfoRequest, dev.guardwire.v1.GetModelInfoResponse> getGetModelInfoMethod;
    if ((getGetModelInfoMethod = GuardServiceGrpc.getGetModelInfoMethod) == null) {
      synchronized (GuardServiceGrpc.class) {
        if ((getGetModelInfoMethod = GuardServiceGrpc.getGetModelInfoMethod) == null) {
          GuardServiceGrpc.getGetModelInfoMethod = getGetModelInfoMethod =
              io.grpc.MethodDescriptor.<dev.guardwire.v1.GetModelInfoRequest, dev.guardwire.v1.GetModelInfoResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "GetModelInfo"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.guardwire.v1.GetModelInfoRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.guardwire.v1.GetModelInfoResponse.getDefaultInstance()))
              .setSchemaDescriptor(new GuardServiceMethodDescriptorSupplier("GetModelInfo"))
              .build();
        }
      }
    }
    return getGetModelInfoMethod;
  }

  /**
   * Creates a new async stub that supports all call types for the service
   */
  public static GuardServiceStub newStub(io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<GuardServiceStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<GuardServiceStub>() {
        @java.lang.Override
        public GuardServiceStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new GuardServiceStub(channel, callOptions);
        }
      };
    return GuardServiceStub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports unary and streaming output calls on the service
   */
  public static GuardServiceBlockingStub newBlockingStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<GuardServiceBlockingStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<GuardServiceBlockingStub>() {
        @java.lang.Override
        public GuardServiceBlockingStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new GuardServiceBlockingStub(channel, callOptions);
        }
      };
    return GuardServiceBlockingStub.newStub(factory, channel);
  }

  /**
   * Creates a new ListenableFuture-style stub that supports unary calls on the service
   */
  public static GuardServiceFutureStub newFutureStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<GuardServiceFutureStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<GuardServiceFutureStub>() {
        @java.lang.Override
        public GuardServiceFutureStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new GuardServiceFutureStub(channel, callOptions);
        }
      };
    return GuardServiceFutureStub.newStub(factory, channel);
  }

  /**
   * <pre>
   * GuardService classifies chat turns with an LLM safety classifier (a guard
   * model such as Llama Guard) running next to the caller.
   * Errors of every RPC are `google.rpc.Status` values carrying a
   * `google.rpc.ErrorInfo` (domain "guardwire.v1", reason from ErrorReason);
   * see error_reason.proto. Common to all RPCs:
   * - UNAVAILABLE (MODEL_NOT_READY, DRAINING): retry with exponential backoff,
   *   or on another replica.
   * - RESOURCE_EXHAUSTED (OVERLOADED): retry after the delay in RetryInfo.
   * - DEADLINE_EXCEEDED (DEADLINE_EXPIRED): the request was dropped before
   *   inference; nothing was scored.
   * - INTERNAL (BACKEND_FAILURE, INTERNAL_ERROR): retry once.
   * A client must never treat an error as a SAFE verdict.
   * </pre>
   */
  public static abstract class GuardServiceImplBase implements io.grpc.BindableService {

    /**
     * <pre>
     * Classifies the last turn of a conversation (or the last turn of the
     * requested role) in one forward pass of the guard model.
     * Fails with INVALID_ARGUMENT (INVALID_REQUEST with BadRequest field
     * violations, or LIMIT_EXCEEDED) when the conversation or policy is
     * malformed: do not retry unchanged. NOT_FOUND (UNKNOWN_POLICY) for an
     * unknown policy id. RESOURCE_EXHAUSTED (OVERLOADED) when the queue is full:
     * retry after RetryInfo's delay. Clients should always set a deadline (the
     * server drops requests whose deadline passes before inference, answering
     * DEADLINE_EXCEEDED). Idempotent: safe to retry.
     * </pre>
     */
    public void classify(dev.guardwire.v1.ClassifyRequest request,
        io.grpc.stub.StreamObserver<dev.guardwire.v1.ClassifyResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getClassifyMethod(), responseObserver);
    }

    /**
     * <pre>
     * Classifies a conversation as it happens, on one stream per conversation.
     * Why a stream: the server keeps the guard model's state (KV cache) for the
     * conversation so far, so checking a response every few tokens costs only
     * the new tokens plus a short assessment suffix.
     * Protocol:
     * 1. The client's first message is `open` (policy, options, cadence). Any
     *    other first message fails the stream with INVALID_ARGUMENT
     *    (STREAM_PROTOCOL, metadata "rule", a BadRequest naming the kind).
     * 2. Then, in any number:
     *    - `turn`: a complete turn (user prompt, or a complete assistant
     *      response). A user turn is always checked: one response is owed.
     *      A complete assistant turn is checked too: one response is owed.
     *    - `delta`: a piece of the assistant response being generated. It
     *      starts a response if none is open. A response is owed each time the
     *      cadence in `open` fires (every N tokens, at sentence ends).
     *    - `check`: asks for a verdict on the conversation so far now; one
     *      response is owed.
     *    - `end_of_turn`: closes the open assistant response; its final check
     *      is owed (unless the last check already covered all of it, in which
     *      case it is repeated with `final = true`).
     *    Turns must alternate as in Classify (user first); a `turn` of role
     *    ROLE_ASSISTANT while a delta response is open, or a `delta` after a
     *    `turn` of ROLE_ASSISTANT, fails with STREAM_PROTOCOL.
     * 3. Every response carries `sequence` (1, 2, ... in the order checks were
     *    owed) and the byte/token offsets of the response text it covers
     *    (`safe_through_offset`), so the client can correlate answers.
     * 4. Clean close: the client half-closes; the server answers every owed
     *    check, then ends the stream with OK. Error close: the server ends the
     *    stream with a status (same codes as Classify); checks not yet answered
     *    are lost and must be retried on a new stream. Cancellation by the
     *    client drops the stream's state and any queued checks. The stream's
     *    deadline bounds the whole conversation.
     * </pre>
     */
    public io.grpc.stub.StreamObserver<dev.guardwire.v1.StreamClassifyRequest> streamClassify(
        io.grpc.stub.StreamObserver<dev.guardwire.v1.StreamClassifyResponse> responseObserver) {
      return io.grpc.stub.ServerCalls.asyncUnimplementedStreamingCall(getStreamClassifyMethod(), responseObserver);
    }

    /**
     * <pre>
     * Describes the model being served: id, family, backend, device, default
     * taxonomy and the server's limits. Fails with UNAVAILABLE
     * (MODEL_NOT_READY) before the model is loaded. Cheap; safe to retry.
     * </pre>
     */
    public void getModelInfo(dev.guardwire.v1.GetModelInfoRequest request,
        io.grpc.stub.StreamObserver<dev.guardwire.v1.GetModelInfoResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getGetModelInfoMethod(), responseObserver);
    }

    @java.lang.Override public final io.grpc.ServerServiceDefinition bindService() {
      return io.grpc.ServerServiceDefinition.builder(getServiceDescriptor())
          .addMethod(
            getClassifyMethod(),
            io.grpc.stub.ServerCalls.asyncUnaryCall(
              new MethodHandlers<
                dev.guardwire.v1.ClassifyRequest,
                dev.guardwire.v1.ClassifyResponse>(
                  this, METHODID_CLASSIFY)))
          .addMethod(
            getStreamClassifyMethod(),
            io.grpc.stub.ServerCalls.asyncBidiStreamingCall(
              new MethodHandlers<
                dev.guardwire.v1.StreamClassifyRequest,
                dev.guardwire.v1.StreamClassifyResponse>(
                  this, METHODID_STREAM_CLASSIFY)))
          .addMethod(
            getGetModelInfoMethod(),
            io.grpc.stub.ServerCalls.asyncUnaryCall(
              new MethodHandlers<
                dev.guardwire.v1.GetModelInfoRequest,
                dev.guardwire.v1.GetModelInfoResponse>(
                  this, METHODID_GET_MODEL_INFO)))
          .build();
    }
  }

  /**
   * <pre>
   * GuardService classifies chat turns with an LLM safety classifier (a guard
   * model such as Llama Guard) running next to the caller.
   * Errors of every RPC are `google.rpc.Status` values carrying a
   * `google.rpc.ErrorInfo` (domain "guardwire.v1", reason from ErrorReason);
   * see error_reason.proto. Common to all RPCs:
   * - UNAVAILABLE (MODEL_NOT_READY, DRAINING): retry with exponential backoff,
   *   or on another replica.
   * - RESOURCE_EXHAUSTED (OVERLOADED): retry after the delay in RetryInfo.
   * - DEADLINE_EXCEEDED (DEADLINE_EXPIRED): the request was dropped before
   *   inference; nothing was scored.
   * - INTERNAL (BACKEND_FAILURE, INTERNAL_ERROR): retry once.
   * A client must never treat an error as a SAFE verdict.
   * </pre>
   */
  public static final class GuardServiceStub extends io.grpc.stub.AbstractAsyncStub<GuardServiceStub> {
    private GuardServiceStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected GuardServiceStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new GuardServiceStub(channel, callOptions);
    }

    /**
     * <pre>
     * Classifies the last turn of a conversation (or the last turn of the
     * requested role) in one forward pass of the guard model.
     * Fails with INVALID_ARGUMENT (INVALID_REQUEST with BadRequest field
     * violations, or LIMIT_EXCEEDED) when the conversation or policy is
     * malformed: do not retry unchanged. NOT_FOUND (UNKNOWN_POLICY) for an
     * unknown policy id. RESOURCE_EXHAUSTED (OVERLOADED) when the queue is full:
     * retry after RetryInfo's delay. Clients should always set a deadline (the
     * server drops requests whose deadline passes before inference, answering
     * DEADLINE_EXCEEDED). Idempotent: safe to retry.
     * </pre>
     */
    public void classify(dev.guardwire.v1.ClassifyRequest request,
        io.grpc.stub.StreamObserver<dev.guardwire.v1.ClassifyResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getClassifyMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Classifies a conversation as it happens, on one stream per conversation.
     * Why a stream: the server keeps the guard model's state (KV cache) for the
     * conversation so far, so checking a response every few tokens costs only
     * the new tokens plus a short assessment suffix.
     * Protocol:
     * 1. The client's first message is `open` (policy, options, cadence). Any
     *    other first message fails the stream with INVALID_ARGUMENT
     *    (STREAM_PROTOCOL, metadata "rule", a BadRequest naming the kind).
     * 2. Then, in any number:
     *    - `turn`: a complete turn (user prompt, or a complete assistant
     *      response). A user turn is always checked: one response is owed.
     *      A complete assistant turn is checked too: one response is owed.
     *    - `delta`: a piece of the assistant response being generated. It
     *      starts a response if none is open. A response is owed each time the
     *      cadence in `open` fires (every N tokens, at sentence ends).
     *    - `check`: asks for a verdict on the conversation so far now; one
     *      response is owed.
     *    - `end_of_turn`: closes the open assistant response; its final check
     *      is owed (unless the last check already covered all of it, in which
     *      case it is repeated with `final = true`).
     *    Turns must alternate as in Classify (user first); a `turn` of role
     *    ROLE_ASSISTANT while a delta response is open, or a `delta` after a
     *    `turn` of ROLE_ASSISTANT, fails with STREAM_PROTOCOL.
     * 3. Every response carries `sequence` (1, 2, ... in the order checks were
     *    owed) and the byte/token offsets of the response text it covers
     *    (`safe_through_offset`), so the client can correlate answers.
     * 4. Clean close: the client half-closes; the server answers every owed
     *    check, then ends the stream with OK. Error close: the server ends the
     *    stream with a status (same codes as Classify); checks not yet answered
     *    are lost and must be retried on a new stream. Cancellation by the
     *    client drops the stream's state and any queued checks. The stream's
     *    deadline bounds the whole conversation.
     * </pre>
     */
    public io.grpc.stub.StreamObserver<dev.guardwire.v1.StreamClassifyRequest> streamClassify(
        io.grpc.stub.StreamObserver<dev.guardwire.v1.StreamClassifyResponse> responseObserver) {
      return io.grpc.stub.ClientCalls.asyncBidiStreamingCall(
          getChannel().newCall(getStreamClassifyMethod(), getCallOptions()), responseObserver);
    }

    /**
     * <pre>
     * Describes the model being served: id, family, backend, device, default
     * taxonomy and the server's limits. Fails with UNAVAILABLE
     * (MODEL_NOT_READY) before the model is loaded. Cheap; safe to retry.
     * </pre>
     */
    public void getModelInfo(dev.guardwire.v1.GetModelInfoRequest request,
        io.grpc.stub.StreamObserver<dev.guardwire.v1.GetModelInfoResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getGetModelInfoMethod(), getCallOptions()), request, responseObserver);
    }
  }

  /**
   * <pre>
   * GuardService classifies chat turns with an LLM safety classifier (a guard
   * model such as Llama Guard) running next to the caller.
   * Errors of every RPC are `google.rpc.Status` values carrying a
   * `google.rpc.ErrorInfo` (domain "guardwire.v1", reason from ErrorReason);
   * see error_reason.proto. Common to all RPCs:
   * - UNAVAILABLE (MODEL_NOT_READY, DRAINING): retry with exponential backoff,
   *   or on another replica.
   * - RESOURCE_EXHAUSTED (OVERLOADED): retry after the delay in RetryInfo.
   * - DEADLINE_EXCEEDED (DEADLINE_EXPIRED): the request was dropped before
   *   inference; nothing was scored.
   * - INTERNAL (BACKEND_FAILURE, INTERNAL_ERROR): retry once.
   * A client must never treat an error as a SAFE verdict.
   * </pre>
   */
  public static final class GuardServiceBlockingStub extends io.grpc.stub.AbstractBlockingStub<GuardServiceBlockingStub> {
    private GuardServiceBlockingStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected GuardServiceBlockingStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new GuardServiceBlockingStub(channel, callOptions);
    }

    /**
     * <pre>
     * Classifies the last turn of a conversation (or the last turn of the
     * requested role) in one forward pass of the guard model.
     * Fails with INVALID_ARGUMENT (INVALID_REQUEST with BadRequest field
     * violations, or LIMIT_EXCEEDED) when the conversation or policy is
     * malformed: do not retry unchanged. NOT_FOUND (UNKNOWN_POLICY) for an
     * unknown policy id. RESOURCE_EXHAUSTED (OVERLOADED) when the queue is full:
     * retry after RetryInfo's delay. Clients should always set a deadline (the
     * server drops requests whose deadline passes before inference, answering
     * DEADLINE_EXCEEDED). Idempotent: safe to retry.
     * </pre>
     */
    public dev.guardwire.v1.ClassifyResponse classify(dev.guardwire.v1.ClassifyRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getClassifyMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Describes the model being served: id, family, backend, device, default
     * taxonomy and the server's limits. Fails with UNAVAILABLE
     * (MODEL_NOT_READY) before the model is loaded. Cheap; safe to retry.
     * </pre>
     */
    public dev.guardwire.v1.GetModelInfoResponse getModelInfo(dev.guardwire.v1.GetModelInfoRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getGetModelInfoMethod(), getCallOptions(), request);
    }
  }

  /**
   * <pre>
   * GuardService classifies chat turns with an LLM safety classifier (a guard
   * model such as Llama Guard) running next to the caller.
   * Errors of every RPC are `google.rpc.Status` values carrying a
   * `google.rpc.ErrorInfo` (domain "guardwire.v1", reason from ErrorReason);
   * see error_reason.proto. Common to all RPCs:
   * - UNAVAILABLE (MODEL_NOT_READY, DRAINING): retry with exponential backoff,
   *   or on another replica.
   * - RESOURCE_EXHAUSTED (OVERLOADED): retry after the delay in RetryInfo.
   * - DEADLINE_EXCEEDED (DEADLINE_EXPIRED): the request was dropped before
   *   inference; nothing was scored.
   * - INTERNAL (BACKEND_FAILURE, INTERNAL_ERROR): retry once.
   * A client must never treat an error as a SAFE verdict.
   * </pre>
   */
  public static final class GuardServiceFutureStub extends io.grpc.stub.AbstractFutureStub<GuardServiceFutureStub> {
    private GuardServiceFutureStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected GuardServiceFutureStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new GuardServiceFutureStub(channel, callOptions);
    }

    /**
     * <pre>
     * Classifies the last turn of a conversation (or the last turn of the
     * requested role) in one forward pass of the guard model.
     * Fails with INVALID_ARGUMENT (INVALID_REQUEST with BadRequest field
     * violations, or LIMIT_EXCEEDED) when the conversation or policy is
     * malformed: do not retry unchanged. NOT_FOUND (UNKNOWN_POLICY) for an
     * unknown policy id. RESOURCE_EXHAUSTED (OVERLOADED) when the queue is full:
     * retry after RetryInfo's delay. Clients should always set a deadline (the
     * server drops requests whose deadline passes before inference, answering
     * DEADLINE_EXCEEDED). Idempotent: safe to retry.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.guardwire.v1.ClassifyResponse> classify(
        dev.guardwire.v1.ClassifyRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getClassifyMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Describes the model being served: id, family, backend, device, default
     * taxonomy and the server's limits. Fails with UNAVAILABLE
     * (MODEL_NOT_READY) before the model is loaded. Cheap; safe to retry.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.guardwire.v1.GetModelInfoResponse> getModelInfo(
        dev.guardwire.v1.GetModelInfoRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getGetModelInfoMethod(), getCallOptions()), request);
    }
  }

  private static final int METHODID_CLASSIFY = 0;
  private static final int METHODID_GET_MODEL_INFO = 1;
  private static final int METHODID_STREAM_CLASSIFY = 2;

  private static final class MethodHandlers<Req, Resp> implements
      io.grpc.stub.ServerCalls.UnaryMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ServerStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ClientStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.BidiStreamingMethod<Req, Resp> {
    private final GuardServiceImplBase serviceImpl;
    private final int methodId;

    MethodHandlers(GuardServiceImplBase serviceImpl, int methodId) {
      this.serviceImpl = serviceImpl;
      this.methodId = methodId;
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public void invoke(Req request, io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        case METHODID_CLASSIFY:
          serviceImpl.classify((dev.guardwire.v1.ClassifyRequest) request,
              (io.grpc.stub.StreamObserver<dev.guardwire.v1.ClassifyResponse>) responseObserver);
          break;
        case METHODID_GET_MODEL_INFO:
          serviceImpl.getModelInfo((dev.guardwire.v1.GetModelInfoRequest) request,
              (io.grpc.stub.StreamObserver<dev.guardwire.v1.GetModelInfoResponse>) responseObserver);
          break;
        default:
          throw new AssertionError();
      }
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public io.grpc.stub.StreamObserver<Req> invoke(
        io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        case METHODID_STREAM_CLASSIFY:
          return (io.grpc.stub.StreamObserver<Req>) serviceImpl.streamClassify(
              (io.grpc.stub.StreamObserver<dev.guardwire.v1.StreamClassifyResponse>) responseObserver);
        default:
          throw new AssertionError();
      }
    }
  }

  private static abstract class GuardServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoFileDescriptorSupplier, io.grpc.protobuf.ProtoServiceDescriptorSupplier {
    GuardServiceBaseDescriptorSupplier() {}

    @java.lang.Override
    public com.google.protobuf.Descriptors.FileDescriptor getFileDescriptor() {
      return dev.guardwire.v1.GuardServiceProto.getDescriptor();
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.ServiceDescriptor getServiceDescriptor() {
      return getFileDescriptor().findServiceByName("GuardService");
    }
  }

  private static final class GuardServiceFileDescriptorSupplier
      extends GuardServiceBaseDescriptorSupplier {
    GuardServiceFileDescriptorSupplier() {}
  }

  private static final class GuardServiceMethodDescriptorSupplier
      extends GuardServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoMethodDescriptorSupplier {
    private final String methodName;

    GuardServiceMethodDescriptorSupplier(String methodName) {
      this.methodName = methodName;
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.MethodDescriptor getMethodDescriptor() {
      return getServiceDescriptor().findMethodByName(methodName);
    }
  }

  private static volatile io.grpc.ServiceDescriptor serviceDescriptor;

  public static io.grpc.ServiceDescriptor getServiceDescriptor() {
    io.grpc.ServiceDescriptor result = serviceDescriptor;
    if (result == null) {
      synchronized (GuardServiceGrpc.class) {
        result = serviceDescriptor;
        if (result == null) {
          serviceDescriptor = result = io.grpc.ServiceDescriptor.newBuilder(SERVICE_NAME)
              .setSchemaDescriptor(new GuardServiceFileDescriptorSupplier())
              .addMethod(getClassifyMethod())
              .addMethod(getStreamClassifyMethod())
              .addMethod(getGetModelInfoMethod())
              .build();
        }
      }
    }
    return result;
  }
}
