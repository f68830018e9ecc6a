#include "dhcp/ra.h"

#include <gtest/gtest.h>

namespace kiln::dhcp {
namespace {

TEST(RouterAdvertisement, GoldenBytes) {
  RaOptions o;
  auto p = parse_ra_prefix("fd99:0:0:99::1/64");  // host bits are cleared
  ASSERT_TRUE(p) << p.error().message;
  o.prefixes.push_back(*p);
  const auto ra = encode_router_advertisement(o, {0x02, 0x11, 0x22, 0x33, 0x44, 0x55});
  const std::vector<std::uint8_t> want = {
      134, 0, 0, 0,                              // type RA, code, checksum (kernel)
      0, 0x00, 0, 0,                             // hop limit unspecified, no M/O, router lifetime 0
      0, 0, 0, 0, 0, 0, 0, 0,                    // reachable, retrans
      1, 1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55,  // source link-layer address
      3, 4, 64, 0x80,                            // prefix info: /64, on-link, not autonomous
      0, 0, 0x0e, 0x10, 0, 0, 0x07, 0x08, 0, 0, 0, 0,  // valid 3600, preferred 1800,
                                                       // reserved
      0xfd, 0x99, 0, 0, 0, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(ra, want);

  o.prefixes.clear();
  o.router_lifetime_s = 1800;
  const auto plain = encode_router_advertisement(o, {1, 2, 3, 4, 5, 6});
  ASSERT_EQ(plain.size(), 24u);
  EXPECT_EQ(plain[6], 0x07);
  EXPECT_EQ(plain[7], 0x08);
}

TEST(RouterAdvertisement, PrefixParsing) {
  EXPECT_FALSE(parse_ra_prefix("fd99::"));
  EXPECT_FALSE(parse_ra_prefix("fd99::/0"));
  EXPECT_FALSE(parse_ra_prefix("fd99::/129"));
  EXPECT_FALSE(parse_ra_prefix("fd99::/64x"));
  EXPECT_FALSE(parse_ra_prefix("10.0.0.0/8"));
  auto p = parse_ra_prefix("2001:db8:ffff:ffff::/52");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->length, 52);
  EXPECT_EQ(p->prefix[6], 0xf0);  // bits past 52 cleared
  EXPECT_EQ(p->prefix[7], 0x00);
}

TEST(RouterAdvertisement, SolicitationValidation) {
  const std::uint8_t rs[] = {133, 0, 0x12, 0x34, 0, 0, 0, 0};
  EXPECT_TRUE(is_router_solicitation(rs, sizeof rs));
  const std::uint8_t with_lla[] = {133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_TRUE(is_router_solicitation(with_lla, sizeof with_lla));
  const std::uint8_t bad_code[] = {133, 1, 0, 0, 0, 0, 0, 0};
  EXPECT_FALSE(is_router_solicitation(bad_code, sizeof bad_code));
  const std::uint8_t zero_len_opt[] = {133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 3, 4, 5, 6, 7};
  EXPECT_FALSE(is_router_solicitation(zero_len_opt, sizeof zero_len_opt));
  const std::uint8_t overlong_opt[] = {133, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 3, 4, 5, 6, 7};
  EXPECT_FALSE(is_router_solicitation(overlong_opt, sizeof overlong_opt));
  const std::uint8_t truncated[] = {133, 0, 0, 0};
  EXPECT_FALSE(is_router_solicitation(truncated, sizeof truncated));
  const std::uint8_t ra[] = {134, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_FALSE(is_router_solicitation(ra, sizeof ra));
}

}  // namespace
}  // namespace kiln::dhcp
