#include "proto/api_types.h"

#include <gtest/gtest.h>

namespace kiln::proto {
namespace {

TEST(ApiTypes, EnumNamesRoundTrip) {
  for (auto s : kAllMachineStates) EXPECT_EQ(parse_machine_state(to_string(s)), s);
  for (auto s : kAllDeploymentStatuses) EXPECT_EQ(parse_deployment_status(to_string(s)), s);
  EXPECT_FALSE(parse_machine_state("Ready").has_value());
  EXPECT_EQ(parse_scope("admin"), Scope::kAdmin);
  EXPECT_FALSE(parse_scope("root").has_value());
  EXPECT_TRUE(is_active(DeploymentStatus::kPending));
  EXPECT_TRUE(is_active(DeploymentStatus::kRunning));
  EXPECT_FALSE(is_active(DeploymentStatus::kSuperseded));
}

TEST(ApiTypes, LabelKeysAndValues) {
  EXPECT_TRUE(validate_label_key("rack"));
  EXPECT_TRUE(validate_label_key("kiln.io/role-1_x"));
  EXPECT_FALSE(validate_label_key(""));
  EXPECT_FALSE(validate_label_key("Rack"));
  EXPECT_FALSE(validate_label_key("-rack"));
  EXPECT_FALSE(validate_label_key("ra ck"));
  EXPECT_FALSE(validate_label_key(std::string(64, 'a')));
  EXPECT_TRUE(validate_label_value(""));
  EXPECT_TRUE(validate_label_value("r12 west"));
  EXPECT_FALSE(validate_label_value("a,b"));
  EXPECT_FALSE(validate_label_value("a=b"));
  EXPECT_FALSE(validate_label_value("tab\there"));
  EXPECT_FALSE(validate_label_value(std::string(256, 'a')));
}

TEST(ApiTypes, SelectorGrammar) {
  auto s = parse_selector("rack=r12, role!=db ,gpu,!retired");
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_EQ(s->size(), 4u);
  EXPECT_EQ((*s)[0], (LabelTerm{"rack", LabelTerm::Op::kEquals, "r12"}));
  EXPECT_EQ((*s)[1], (LabelTerm{"role", LabelTerm::Op::kNotEquals, "db"}));
  EXPECT_EQ((*s)[2], (LabelTerm{"gpu", LabelTerm::Op::kExists, ""}));
  EXPECT_EQ((*s)[3], (LabelTerm{"retired", LabelTerm::Op::kNotExists, ""}));
  EXPECT_EQ(format_selector(*s), "rack=r12,role!=db,gpu,!retired");
}

TEST(ApiTypes, SelectorRejectsGarbage) {
  for (const char* bad : {"", "  ", "rack=r12,", "=r12", "Rack=1", "rack=a=b", "a,,b", "!"}) {
    auto s = parse_selector(bad);
    EXPECT_FALSE(s) << "'" << bad << "' parsed";
    if (!s) {
      EXPECT_EQ(s.error().code, Errc::kInvalid);
    }
  }
}

TEST(ApiTypes, ImageNamesAndVersions) {
  EXPECT_TRUE(validate_image_name("ubuntu-24.04_base"));
  EXPECT_FALSE(validate_image_name(""));
  EXPECT_FALSE(validate_image_name(".hidden"));
  EXPECT_FALSE(validate_image_name("a/b"));
  EXPECT_FALSE(validate_image_name("a+b"));
  EXPECT_TRUE(validate_image_version("1.2.3+build.7"));
  EXPECT_FALSE(validate_image_version("1 2"));
}

}  // namespace
}  // namespace kiln::proto
