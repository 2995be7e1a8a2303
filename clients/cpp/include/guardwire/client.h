// guardwire::GuardClient: a thin C++ client of the Guardwire guard sidecar
// (guardwire.v1.GuardService) over the generated stubs in gen/.
//
// Deadline on every call, errors decoded from google.rpc.Status details (GuardError),
// bounded retries on UNAVAILABLE / RESOURCE_EXHAUSTED honouring RetryInfo, and a
// three-valued Decision (SAFE / UNSAFE / UNAVAILABLE): a guard that is down is never
// mistaken for a safe verdict.
//
//   guardwire::GuardClient guard("127.0.0.1:50051");
//   auto d = guard.Check(guardwire::MakeConversation({guardwire::User("hi")}));
//   if (!d.Allowed(guardwire::FailMode::kClosed)) { /* block */ }
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "guardwire/v1/guard_service.grpc.pb.h"
#include "guardwire/v1/guard_service.pb.h"

namespace guardwire {

// The generated messages live in guardwire::v1 (package guardwire.v1).

/// ErrorInfo.domain of every error the Guardwire server returns.
inline constexpr const char* kDomain = "guardwire.v1";

/// Canonical name of a gRPC code, e.g. "INVALID_ARGUMENT".
std::string CodeName(grpc::StatusCode code);

/// One google.rpc.BadRequest field violation.
struct FieldViolation {
  std::string field;
  std::string description;
};

/// A failed call decoded from its google.rpc.Status. Every error the client throws.
class GuardError : public std::runtime_error {
 public:
  GuardError(grpc::StatusCode code, std::string message, std::string domain = "",
             std::string reason = "", std::map<std::string, std::string> metadata = {},
             std::vector<FieldViolation> field_violations = {},
             std::optional<std::chrono::milliseconds> retry_delay = std::nullopt);

  /// Decodes a failed grpc::Status (its error_details hold the google.rpc.Status).
  static GuardError FromStatus(const grpc::Status& status);

  grpc::StatusCode code() const { return code_; }
  std::string code_name() const { return CodeName(code_); }
  const std::string& status_message() const { return message_; }
  /// ErrorInfo.domain ("" for transport errors without ErrorInfo).
  const std::string& domain() const { return domain_; }
  /// ErrorInfo.reason: a guardwire.v1.ErrorReason name such as "INVALID_REQUEST".
  const std::string& reason() const { return reason_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<FieldViolation>& field_violations() const { return field_violations_; }
  /// RetryInfo.retry_delay, when the server sent one.
  const std::optional<std::chrono::milliseconds>& retry_delay() const { return retry_delay_; }
  int attempts() const { return attempts_; }
  void set_attempts(int n) { attempts_ = n; }
  /// UNAVAILABLE and RESOURCE_EXHAUSTED may be retried unchanged (and are, automatically).
  bool retryable() const {
    return code_ == grpc::StatusCode::UNAVAILABLE || code_ == grpc::StatusCode::RESOURCE_EXHAUSTED;
  }

 private:
  grpc::StatusCode code_;
  std::string message_, domain_, reason_;
  std::map<std::string, std::string> metadata_;
  std::vector<FieldViolation> field_violations_;
  std::optional<std::chrono::milliseconds> retry_delay_;
  int attempts_ = 1;
};

/// The three-valued outcome of a check. kUnavailable is never "safe" by itself.
enum class Outcome { kUnavailable, kSafe, kUnsafe };
const char* OutcomeName(Outcome o);

/// The caller's explicit choice for Outcome::kUnavailable.
enum class FailMode { kClosed, kOpen };

/// The result of GuardClient::Check.
struct Decision {
  Outcome outcome = Outcome::kUnavailable;
  std::optional<v1::ClassifyResponse> response;  // set when there is a verdict
  std::optional<GuardError> error;               // set when there is none
  /// SAFE passes, UNSAFE is blocked, UNAVAILABLE follows the explicit fail mode.
  bool Allowed(FailMode mode) const;
  static Decision Of(const v1::ClassifyResponse& response);
  static Decision Unavailable(GuardError error);
};

/// Bounds the automatic retries of Classify / ModelInfo (UNAVAILABLE, RESOURCE_EXHAUSTED
/// only). Delay: RetryInfo's when sent, else exponential backoff with full jitter. Retries
/// never outlive the call's deadline.
struct RetryPolicy {
  int max_attempts = 3;
  std::chrono::milliseconds initial_backoff{50};
  std::chrono::milliseconds max_backoff{1000};
  std::chrono::milliseconds max_retry_delay{5000};  // a longer RetryInfo delay is not waited for
};

struct ClientOptions {
  std::chrono::milliseconds timeout{2000};  // deadline of a call, all attempts together
  RetryPolicy retry;
};

v1::Turn User(std::string text);
v1::Turn Assistant(std::string text);
v1::Conversation MakeConversation(std::initializer_list<v1::Turn> turns);

/// One StreamClassify stream. Send from one thread, then CloseSend(); Next() returns the
/// next response or std::nullopt after a clean end, and throws GuardError when the stream
/// ended with an error (code UNIMPLEMENTED when the server does not serve StreamClassify).
class GuardStream {
 public:
  GuardStream(v1::GuardService::Stub* stub, const v1::StreamOpen& open,
              std::chrono::milliseconds timeout);
  ~GuardStream();
  GuardStream(const GuardStream&) = delete;
  GuardStream& operator=(const GuardStream&) = delete;

  /// Each returns false when the stream is already closed (Next() then reports why).
  bool SendTurn(const v1::Turn& turn);
  bool SendDelta(const std::string& text);
  bool CheckNow();
  bool EndOfTurn();
  /// Half-close: the server answers every owed check, then ends the stream.
  void CloseSend();
  std::optional<v1::StreamClassifyResponse> Next();
  /// Half-closes and returns every remaining response (throws GuardError on error).
  std::vector<v1::StreamClassifyResponse> Collect();
  /// Cancels the stream; unanswered checks are dropped.
  void Cancel();

 private:
  bool Send(const v1::StreamClassifyRequest& m);
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StreamClassifyRequest, v1::StreamClassifyResponse>> rw_;
  bool half_closed_ = false;
  bool finished_ = false;
};

class GuardClient {
 public:
  /// Plaintext channel to host:port (a sidecar on loopback).
  explicit GuardClient(const std::string& target, ClientOptions options = {});
  explicit GuardClient(std::shared_ptr<grpc::ChannelInterface> channel, ClientOptions options = {});

  /// Classifies the last turn. Throws GuardError.
  v1::ClassifyResponse Classify(const v1::Conversation& conversation);
  v1::ClassifyResponse Classify(const v1::ClassifyRequest& request);
  /// Classify with a three-valued answer; never throws for a failed call.
  Decision Check(const v1::Conversation& conversation) noexcept;
  Decision Check(const v1::ClassifyRequest& request) noexcept;
  v1::GetModelInfoResponse ModelInfo();
  /// Opens a StreamClassify stream (not retried); the timeout bounds the whole stream.
  std::unique_ptr<GuardStream> Stream(const v1::StreamOpen& open);
  std::unique_ptr<GuardStream> Stream(const v1::StreamOpen& open, std::chrono::milliseconds timeout);

  v1::GuardService::Stub* stub() { return stub_.get(); }

 private:
  template <typename Call>
  void WithRetry(Call call);
  std::shared_ptr<grpc::ChannelInterface> channel_;
  std::unique_ptr<v1::GuardService::Stub> stub_;
  ClientOptions options_;
};

}  // namespace guardwire
