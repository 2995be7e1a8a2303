// Classifies one text, runs one StreamClassify stream and triggers one validation error
// against a Guardwire server, printing what the client decoded. The last line is
// "RESULT <json>" (the same shape in every language's example; tests/clients parses it).
//
//   make -C clients/cpp && clients/cpp/build/guardwire-example --addr 127.0.0.1:50051
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "guardwire/client.h"

using guardwire::Decision;
using guardwire::FailMode;
using guardwire::GuardError;

namespace {

std::string Q(const std::string& s) {  // a JSON string
  std::string o = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  return o + "\"";
}

const char* B(bool b) { return b ? "true" : "false"; }

std::string ErrorJson(const GuardError& e) {
  std::ostringstream o;
  o << "{\"code\":" << Q(e.code_name()) << ",\"domain\":" << Q(e.domain())
    << ",\"reason\":" << Q(e.reason()) << ",\"message\":" << Q(e.status_message())
    << ",\"metadata\":{";
  bool first = true;
  for (const auto& [k, v] : e.metadata()) {
    o << (first ? "" : ",") << Q(k) << ":" << Q(v);
    first = false;
  }
  o << "},\"field_violations\":[";
  first = true;
  for (const auto& v : e.field_violations()) {
    o << (first ? "" : ",") << "{\"field\":" << Q(v.field) << ",\"description\":" << Q(v.description) << "}";
    first = false;
  }
  o << "],\"retry_delay_ms\":";
  if (e.retry_delay()) o << e.retry_delay()->count(); else o << "null";
  o << ",\"attempts\":" << e.attempts() << "}";
  return o.str();
}

std::string DecisionJson(const Decision& d) {
  std::ostringstream o;
  o << "{\"outcome\":" << Q(guardwire::OutcomeName(d.outcome))
    << ",\"allowed_fail_closed\":" << B(d.Allowed(FailMode::kClosed))
    << ",\"allowed_fail_open\":" << B(d.Allowed(FailMode::kOpen));
  if (d.response) {
    o << ",\"verdict\":" << Q(guardwire::v1::Verdict_Name(d.response->verdict()))
      << ",\"unsafe_score\":" << d.response->unsafe_score() << ",\"categories\":[";
    for (int i = 0; i < d.response->categories_size(); ++i) {
      o << (i ? "," : "") << Q(d.response->categories(i).code());
    }
    o << "]";
  }
  if (d.error) o << ",\"error\":" << ErrorJson(*d.error);
  o << "}";
  return o.str();
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args = {
      {"--addr", "127.0.0.1:50051"}, {"--text", "How do I bake bread?"}, {"--timeout-ms", "5000"}};
  for (int i = 1; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
  const std::string text = args["--text"];
  guardwire::ClientOptions opts;
  opts.timeout = std::chrono::milliseconds(std::stoll(args["--timeout-ms"]));
  bool failed = false;
  std::ostringstream result;
  result << "{\"language\":\"cpp\"";

  guardwire::GuardClient guard(args["--addr"], opts);

  // 1. Unary classify, three-valued.
  Decision d = guard.Check(guardwire::MakeConversation({guardwire::User(text)}));
  std::cout << "classify: outcome=" << guardwire::OutcomeName(d.outcome);
  if (d.response) {
    std::cout << " verdict=" << guardwire::v1::Verdict_Name(d.response->verdict())
              << " unsafe_score=" << d.response->unsafe_score();
  }
  if (d.error) {
    std::cout << " error=" << d.error->what();
    failed = true;
  }
  std::cout << "\n";
  result << ",\"classify\":" << DecisionJson(d);

  d = guard.Check(guardwire::MakeConversation({guardwire::User("GW_TEST_UNSAFE how do I hurt someone?")}));
  std::cout << "classify unsafe: outcome=" << guardwire::OutcomeName(d.outcome)
            << " allowed(fail-open)=" << B(d.Allowed(FailMode::kOpen)) << "\n";
  failed |= d.error.has_value();
  result << ",\"unsafe\":" << DecisionJson(d);

  // 2. One stream: a user turn and a complete assistant turn (one check owed each).
  std::vector<guardwire::v1::StreamClassifyResponse> responses;
  std::string status = "OK", stream_error;
  {
    auto s = guard.Stream(guardwire::v1::StreamOpen());
    s->SendTurn(guardwire::User(text));  // false: the server ended the stream; Next() says why
    s->SendTurn(guardwire::Assistant("Mix flour, water, salt and yeast, then bake."));
    s->CloseSend();
    try {
      while (auto r = s->Next()) responses.push_back(*r);
      std::cout << "stream: OK, " << responses.size() << " responses\n";
    } catch (const GuardError& e) {
      status = e.code_name();
      stream_error = ErrorJson(e);
      if (e.code() == grpc::StatusCode::UNIMPLEMENTED) {
        std::cout << "stream: server does not implement StreamClassify yet: " << e.what() << "\n";
      } else {
        std::cout << "stream: failed: " << e.what() << "\n";
        failed = true;
      }
    }
  }
  result << ",\"stream\":{\"status\":" << Q(status);
  if (!stream_error.empty()) result << ",\"error\":" << stream_error;
  result << ",\"responses\":[";
  for (size_t i = 0; i < responses.size(); ++i) {
    const auto& r = responses[i];
    result << (i ? "," : "") << "{\"sequence\":" << r.sequence()
           << ",\"verdict\":" << Q(guardwire::v1::Verdict_Name(r.result().verdict()))
           << ",\"outcome\":" << Q(guardwire::OutcomeName(Decision::Of(r.result()).outcome))
           << ",\"final\":" << B(r.final()) << ",\"turn_index\":" << r.turn_index() << "}";
  }
  result << "]}";

  // 3. A validation error: an empty conversation.
  try {
    guard.Classify(guardwire::v1::Conversation());
    std::cout << "validation error: none (unexpected)\n";
    result << ",\"validation_error\":null";
    failed = true;
  } catch (const GuardError& e) {
    std::cout << "validation error: code=" << e.code_name() << " reason=" << e.reason()
              << " domain=" << e.domain() << "\n";
    for (const auto& v : e.field_violations()) {
      std::cout << "  field violation: " << v.field << ": " << v.description << "\n";
    }
    result << ",\"validation_error\":" << ErrorJson(e);
    failed |= e.code() != grpc::StatusCode::INVALID_ARGUMENT;
  }

  // 4. Optional: a guard that is down is UNAVAILABLE, never SAFE.
  if (args.count("--down-addr")) {
    guardwire::GuardClient down(args["--down-addr"], opts);
    Decision dd = down.Check(guardwire::MakeConversation({guardwire::User(text)}));
    std::cout << "guard down: outcome=" << guardwire::OutcomeName(dd.outcome)
              << " allowed(fail-closed)=" << B(dd.Allowed(FailMode::kClosed))
              << " allowed(fail-open)=" << B(dd.Allowed(FailMode::kOpen)) << "\n";
    failed |= dd.outcome != guardwire::Outcome::kUnavailable;
    result << ",\"down\":" << DecisionJson(dd);
  }

  result << "}";
  std::cout << "RESULT " << result.str() << std::endl;
  return failed ? 1 : 0;
}
