#include "guardwire/client.h"

#include <random>
#include <thread>
#include <utility>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace guardwire {

std::string CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  int c = static_cast<int>(code);
  if (c >= 0 && c < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) return kNames[c];
  return "CODE(" + std::to_string(c) + ")";
}

static std::string Describe(grpc::StatusCode code, const std::string& reason,
                            const std::string& message) {
  std::string s = "guardwire: " + CodeName(code);
  if (!reason.empty()) s += " (" + reason + ")";
  if (!message.empty()) s += ": " + message;
  return s;
}

GuardError::GuardError(grpc::StatusCode code, std::string message, std::string domain,
                       std::string reason, std::map<std::string, std::string> metadata,
                       std::vector<FieldViolation> field_violations,
                       std::optional<std::chrono::milliseconds> retry_delay)
    : std::runtime_error(Describe(code, reason, message)),
      code_(code),
      message_(std::move(message)),
      domain_(std::move(domain)),
      reason_(std::move(reason)),
      metadata_(std::move(metadata)),
      field_violations_(std::move(field_violations)),
      retry_delay_(retry_delay) {}

GuardError GuardError::FromStatus(const grpc::Status& status) {
  std::string domain, reason;
  std::map<std::string, std::string> metadata;
  std::vector<FieldViolation> violations;
  std::optional<std::chrono::milliseconds> retry_delay;
  google::rpc::Status rich;
  if (!status.error_details().empty() && rich.ParseFromString(status.error_details())) {
    for (const auto& detail : rich.details()) {
      google::rpc::ErrorInfo info;
      google::rpc::BadRequest bad;
      google::rpc::RetryInfo retry;
      if (detail.UnpackTo(&info)) {
        domain = info.domain();
        reason = info.reason();
        metadata.insert(info.metadata().begin(), info.metadata().end());
      } else if (detail.UnpackTo(&bad)) {
        for (const auto& v : bad.field_violations()) violations.push_back({v.field(), v.description()});
      } else if (detail.UnpackTo(&retry)) {
        retry_delay = std::chrono::milliseconds(retry.retry_delay().seconds() * 1000 +
                                                retry.retry_delay().nanos() / 1000000);
      }
    }
  }
  return GuardError(status.error_code(), status.error_message(), domain, reason, metadata,
                    violations, retry_delay);
}

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kSafe: return "SAFE";
    case Outcome::kUnsafe: return "UNSAFE";
    default: return "UNAVAILABLE";
  }
}

bool Decision::Allowed(FailMode mode) const {
  switch (outcome) {
    case Outcome::kSafe: return true;
    case Outcome::kUnsafe: return false;
    default: return mode == FailMode::kOpen;
  }
}

Decision Decision::Of(const v1::ClassifyResponse& response) {
  Decision d;
  d.response = response;
  switch (response.verdict()) {
    case v1::VERDICT_SAFE: d.outcome = Outcome::kSafe; break;
    case v1::VERDICT_UNSAFE: d.outcome = Outcome::kUnsafe; break;
    default:
      d.outcome = Outcome::kUnavailable;
      d.error = GuardError(grpc::StatusCode::UNKNOWN, "server answered VERDICT_UNSPECIFIED");
  }
  return d;
}

Decision Decision::Unavailable(GuardError error) {
  Decision d;
  d.error = std::move(error);
  return d;
}

v1::Turn User(std::string text) {
  v1::Turn t;
  t.set_role(v1::ROLE_USER);
  t.set_content(std::move(text));
  return t;
}

v1::Turn Assistant(std::string text) {
  v1::Turn t;
  t.set_role(v1::ROLE_ASSISTANT);
  t.set_content(std::move(text));
  return t;
}

v1::Conversation MakeConversation(std::initializer_list<v1::Turn> turns) {
  v1::Conversation c;
  for (const auto& t : turns) *c.add_turns() = t;
  return c;
}

GuardClient::GuardClient(const std::string& target, ClientOptions options)
    : GuardClient(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()), options) {}

GuardClient::GuardClient(std::shared_ptr<grpc::ChannelInterface> channel, ClientOptions options)
    : channel_(std::move(channel)), stub_(v1::GuardService::NewStub(channel_)), options_(options) {
  if (options_.retry.max_attempts < 1) options_.retry.max_attempts = 1;
}

template <typename Call>
void GuardClient::WithRetry(Call call) {
  using Clock = std::chrono::system_clock;
  const auto deadline = Clock::now() + options_.timeout;
  const RetryPolicy& p = options_.retry;
  auto backoff = p.initial_backoff;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    grpc::Status st = call(&ctx);
    if (st.ok()) return;
    GuardError err = GuardError::FromStatus(st);
    err.set_attempts(attempt);
    if (!err.retryable() || attempt >= p.max_attempts) throw err;
    std::chrono::milliseconds delay;
    if (err.retry_delay()) {
      if (*err.retry_delay() > p.max_retry_delay) throw err;
      delay = *err.retry_delay();
    } else {
      delay = std::chrono::milliseconds(
          std::uniform_int_distribution<long long>(0, backoff.count())(rng));
      backoff = std::min(backoff * 2, p.max_backoff);
    }
    if (Clock::now() + delay >= deadline) throw err;  // could not retry before the deadline
    std::this_thread::sleep_for(delay);
  }
}

v1::ClassifyResponse GuardClient::Classify(const v1::Conversation& conversation) {
  v1::ClassifyRequest req;
  *req.mutable_conversation() = conversation;
  return Classify(req);
}

v1::ClassifyResponse GuardClient::Classify(const v1::ClassifyRequest& request) {
  v1::ClassifyResponse resp;
  WithRetry([&](grpc::ClientContext* ctx) {
    resp.Clear();
    return stub_->Classify(ctx, request, &resp);
  });
  return resp;
}

Decision GuardClient::Check(const v1::Conversation& conversation) noexcept {
  v1::ClassifyRequest req;
  *req.mutable_conversation() = conversation;
  return Check(req);
}

Decision GuardClient::Check(const v1::ClassifyRequest& request) noexcept {
  try {
    return Decision::Of(Classify(request));
  } catch (const GuardError& e) {
    return Decision::Unavailable(e);
  } catch (const std::exception& e) {
    return Decision::Unavailable(GuardError(grpc::StatusCode::UNKNOWN, e.what()));
  }
}

v1::GetModelInfoResponse GuardClient::ModelInfo() {
  v1::GetModelInfoResponse resp;
  WithRetry([&](grpc::ClientContext* ctx) {
    resp.Clear();
    return stub_->GetModelInfo(ctx, v1::GetModelInfoRequest(), &resp);
  });
  return resp;
}

std::unique_ptr<GuardStream> GuardClient::Stream(const v1::StreamOpen& open) {
  return Stream(open, options_.timeout);
}

std::unique_ptr<GuardStream> GuardClient::Stream(const v1::StreamOpen& open,
                                                 std::chrono::milliseconds timeout) {
  return std::make_unique<GuardStream>(stub_.get(), open, timeout);
}

GuardStream::GuardStream(v1::GuardService::Stub* stub, const v1::StreamOpen& open,
                         std::chrono::milliseconds timeout) {
  ctx_.set_deadline(std::chrono::system_clock::now() + timeout);
  rw_ = stub->StreamClassify(&ctx_);
  v1::StreamClassifyRequest m;
  *m.mutable_open() = open;
  Send(m);
}

GuardStream::~GuardStream() {
  if (!finished_) {
    ctx_.TryCancel();
    rw_->Finish();
  }
}

bool GuardStream::Send(const v1::StreamClassifyRequest& m) {
  if (half_closed_) throw std::logic_error("stream already half-closed");
  return rw_->Write(m);
}

bool GuardStream::SendTurn(const v1::Turn& turn) {
  v1::StreamClassifyRequest m;
  *m.mutable_turn() = turn;
  return Send(m);
}

bool GuardStream::SendDelta(const std::string& text) {
  v1::StreamClassifyRequest m;
  m.mutable_delta()->set_text(text);
  return Send(m);
}

bool GuardStream::CheckNow() {
  v1::StreamClassifyRequest m;
  m.mutable_check();
  return Send(m);
}

bool GuardStream::EndOfTurn() {
  v1::StreamClassifyRequest m;
  m.mutable_end_of_turn();
  return Send(m);
}

void GuardStream::CloseSend() {
  if (!half_closed_) {
    half_closed_ = true;
    rw_->WritesDone();
  }
}

std::optional<v1::StreamClassifyResponse> GuardStream::Next() {
  if (finished_) return std::nullopt;
  v1::StreamClassifyResponse r;
  if (rw_->Read(&r)) return r;
  finished_ = true;
  grpc::Status st = rw_->Finish();
  if (!st.ok()) throw GuardError::FromStatus(st);
  return std::nullopt;
}

std::vector<v1::StreamClassifyResponse> GuardStream::Collect() {
  CloseSend();
  std::vector<v1::StreamClassifyResponse> out;
  while (auto r = Next()) out.push_back(std::move(*r));
  return out;
}

void GuardStream::Cancel() { ctx_.TryCancel(); }

}  // namespace guardwire
