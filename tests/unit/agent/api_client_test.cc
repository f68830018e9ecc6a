#include "agent/api_client.h"

#include <gtest/gtest.h>

#include "proto/image_format.h"

namespace kiln::agent {
namespace {

TEST(AgentSignatureHeader, DecodesHexEitherCase) {
  std::string hex;
  for (int i = 0; i < 64; ++i) hex += (i % 2 ? "aB" : "0f");
  auto sig = decode_signature_header(hex);
  ASSERT_TRUE(sig) << sig.error().message;
  ASSERT_EQ(sig->size(), proto::image::kSignatureSize);
  EXPECT_EQ(static_cast<unsigned char>((*sig)[0]), 0x0f);
  EXPECT_EQ(static_cast<unsigned char>((*sig)[1]), 0xab);
}

TEST(AgentSignatureHeader, AbsentMeansUnsigned) {
  auto sig = decode_signature_header("");
  ASSERT_TRUE(sig);
  EXPECT_EQ(*sig, "");
}

TEST(AgentSignatureHeader, BadValuesAreErrorsNamingTheHeader) {
  const std::string valid(128, 'a');
  const struct {
    const char* name;
    std::string value;
    const char* message;
  } cases[] = {
      // Before: std::stoi threw std::invalid_argument here and the agent died unreported.
      {"not hex", std::string(128, 'z'), "is not hex"},
      {"a sign std::stoi accepted", "-1" + valid.substr(2), "is not hex"},
      {"whitespace inside", " 1" + valid.substr(2), "is not hex"},
      {"odd length", valid.substr(1), "has 127 characters"},
      {"too short", "abcd", "has 4 characters, not the 128 hex digits"},
      {"too long", valid + "00", "has 130 characters"},
      {"not ASCII", std::string(126, 'a') + "\xc3\xa9", "is not hex"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Result<std::string> sig = std::string();
    ASSERT_NO_THROW(sig = decode_signature_header(c.value));
    ASSERT_FALSE(sig);
    EXPECT_NE(sig.error().message.find("Kiln-Signature header"), std::string::npos);
    EXPECT_NE(sig.error().message.find(c.message), std::string::npos) << sig.error().message;
  }
}

// The agent's report bodies are proto's AgentReport codec; these pin the bytes on the wire.
TEST(AgentReportBody, ProgressHasNoStatus) {
  proto::AgentReport r;
  r.stage = "writing";
  r.bytes_done = 10;
  r.bytes_total = 100;
  r.detail = {{"fetched_bytes", 7}};
  EXPECT_EQ(
      proto::to_json(r).dump(),
      R"({"bytes_done":10,"bytes_total":100,"detail":{"fetched_bytes":7},"stage":"writing"})");
}

TEST(AgentReportBody, FailureNamesStageAndReason) {
  proto::AgentReport r;
  r.stage = "manifest";
  r.result = proto::DeploymentStatus::kFailed;
  r.reason = "the manifest's Kiln-Signature header is not hex";
  EXPECT_EQ(proto::to_json(r).dump(),
            R"({"reason":"the manifest's Kiln-Signature header is not hex","stage":"manifest",)"
            R"("status":"failed"})");
}

TEST(AgentReportBody, Success) {
  proto::AgentReport r;
  r.stage = "done";
  r.bytes_done = 5;
  r.bytes_total = 5;
  r.result = proto::DeploymentStatus::kSucceeded;
  EXPECT_EQ(proto::to_json(r).dump(),
            R"({"bytes_done":5,"bytes_total":5,"stage":"done","status":"succeeded"})");
}

}  // namespace
}  // namespace kiln::agent
