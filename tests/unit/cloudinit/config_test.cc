#include "cloudinit/config.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace kiln::cloudinit {
namespace {

using json = nlohmann::json;

const char* kKey =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBu0rBcNm7gY5pN8eY0e2l8m7s6lq1yJmB5XbS6f1x2Q ops@example";

Config parsed(const json& j) {
  auto c = parse_config(j);
  EXPECT_TRUE(c) << (c ? "" : c.error().message);
  return c ? *c : Config{};
}

TEST(CloudInitConfig, ParsesEveryField) {
  auto c = parsed({{"hostname", "web-01"},
                   {"fqdn", "web-01.r12.example.net"},
                   {"ssh_authorized_keys", {kKey}},
                   {"user_data", "#cloud-config\nruncmd: [true]\n"},
                   {"vendor_data", "#!/bin/sh\ntrue\n"},
                   {"network_config", {{"version", 2}, {"ethernets", json::object()}}},
                   {"metadata", {{"rack", "r12"}}},
                   {"config_drive", false}});
  EXPECT_EQ(c.hostname, "web-01");
  EXPECT_EQ(c.fqdn, "web-01.r12.example.net");
  ASSERT_TRUE(c.ssh_authorized_keys);
  EXPECT_EQ(c.ssh_authorized_keys->size(), 1u);
  EXPECT_EQ(c.metadata.at("rack"), "r12");
  EXPECT_EQ(c.config_drive, false);
  // The JSON form round-trips, and the hash follows the content.
  EXPECT_EQ(parsed(to_json(c)), c);
  auto d = c;
  d.user_data = "#cloud-config\nruncmd: [false]\n";
  EXPECT_NE(config_sha256(c), config_sha256(d));
  EXPECT_EQ(config_sha256(c), config_sha256(parsed(to_json(c))));
}

// Every refusal names its field; wrong types are 400, bad values 422.
TEST(CloudInitConfig, RefusalsNameTheField) {
  struct Case {
    json doc;
    Errc code;
    std::string starts;
  };
  const Case cases[] = {
      {{{"hostname", 7}}, Errc::kBadRequest, "hostname:"},
      {{{"hostname", "Web_01"}}, Errc::kInvalid, "hostname:"},
      {{{"hostname", "-web"}}, Errc::kInvalid, "hostname:"},
      {{{"hostname", std::string(64, 'a')}}, Errc::kInvalid, "hostname:"},
      {{{"fqdn", "web"}}, Errc::kInvalid, "fqdn:"},
      {{{"hostname", "web"}, {"fqdn", "db.example"}}, Errc::kInvalid, "fqdn:"},
      {{{"fqdn", "web..example"}}, Errc::kInvalid, "fqdn:"},
      {{{"ssh_authorized_keys", "ssh-rsa AAAA"}}, Errc::kBadRequest, "ssh_authorized_keys:"},
      {{{"ssh_authorized_keys", {"ssh-foo AAAA"}}}, Errc::kInvalid, "ssh_authorized_keys[0]:"},
      {{{"ssh_authorized_keys", {kKey, "ssh-rsa AAAA\nssh-rsa BBBB"}}},
       Errc::kInvalid,
       "ssh_authorized_keys[1]:"},
      {{{"ssh_authorized_keys", {"ssh-rsa !!!"}}}, Errc::kInvalid, "ssh_authorized_keys[0]:"},
      {{{"user_data", "runcmd: [true]"}}, Errc::kInvalid, "user_data:"},
      {{{"user_data", "#cloud-config\n" + std::string(70000, 'x')}}, Errc::kInvalid, "user_data:"},
      {{{"user_data", std::string("#!/bin/sh\n\xff\xfe")}}, Errc::kInvalid, "user_data:"},
      {{{"vendor_data", 1}}, Errc::kBadRequest, "vendor_data:"},
      {{{"network_config", {{"version", 1}}}}, Errc::kInvalid, "network_config:"},
      {{{"network_config", {{"version", 2}, {"routes", json::array()}}}},
       Errc::kInvalid,
       "network_config:"},
      {{{"network_config", "version: 2"}}, Errc::kBadRequest, "network_config:"},
      {{{"metadata", {{"bad key", "v"}}}}, Errc::kInvalid, "metadata:"},
      {{{"metadata", {{"k", 1}}}}, Errc::kBadRequest, "metadata.k:"},
      {{{"config_drive", "yes"}}, Errc::kBadRequest, "config_drive:"},
      {{{"hostnme", "typo"}}, Errc::kBadRequest, "hostnme:"},
  };
  for (const auto& c : cases) {
    auto r = parse_config(c.doc);
    ASSERT_FALSE(r) << c.doc.dump();
    EXPECT_EQ(r.error().code, c.code) << c.doc.dump() << ": " << r.error().message;
    EXPECT_EQ(r.error().message.rfind(c.starts, 0), 0u) << r.error().message;
  }
  EXPECT_FALSE(parse_config(json::array()));
}

TEST(CloudInitConfig, UserDataCapIsTheLimit) {
  const std::string doc = "#cloud-config\n" + std::string(100, 'x');
  EXPECT_TRUE(parse_config({{"user_data", doc}}, {doc.size()}));
  EXPECT_FALSE(parse_config({{"user_data", doc}}, {doc.size() - 1}));
}

TEST(CloudInitConfig, ReadersSeeNoSecrets) {
  auto c = parsed(
      {{"user_data", "#cloud-config\npassword: hunter2\n"},
       {"network_config",
        json::parse(
            R"({"version": 2, "wifis": {"wl0": {"access-points": {"lab": {"password": "wifi-pw"}}}}})")}});
  const auto shown = to_json(c, false);
  EXPECT_EQ(shown.dump().find("hunter2"), std::string::npos);
  EXPECT_EQ(shown.dump().find("wifi-pw"), std::string::npos);
  // Only the size: a hash of a short secret would be a guessing oracle.
  EXPECT_EQ(shown["user_data"], (json{{"bytes", c.user_data->size()}}));
  EXPECT_TRUE(shown["network_config"].contains("bytes"));
}

TEST(CloudInitConfig, AMachineFqdnWinsOverAProfileHostname) {
  std::vector<Profile> profiles = {{"generic", {}, 0, parsed({{"hostname", "generic"}})}};
  auto e = merge(profiles, {}, parsed({{"fqdn", "web-01.r12.example.net"}}));
  EXPECT_EQ(e.config.hostname, "web-01");
  EXPECT_EQ(e.config.fqdn, "web-01.r12.example.net");
  // And a later hostname renames an earlier FQDN's host.
  profiles = {{"domain", {}, 0, parsed({{"fqdn", "x.r12.example.net"}})}};
  e = merge(profiles, {}, parsed({{"hostname", "db-02"}}));
  EXPECT_EQ(e.config.fqdn, "db-02.r12.example.net");
}

TEST(CloudInitConfig, MetaDataIsAscii) {
  auto c = parsed({{"metadata", {{"note", "caf\u00e9 \u0085"}}}});
  auto md = render_nocloud(c, {1, 1, "m", "x:1", "", ""}).meta_data;
  EXPECT_TRUE(std::all_of(md.begin(), md.end(),
                          [](char ch) { return static_cast<unsigned char>(ch) < 0x80; }));
  EXPECT_EQ(json::parse(md)["kiln"]["metadata"]["note"], "caf\u00e9 \u0085");
}

TEST(CloudInitConfig, RenderedSizeCountsEveryFile) {
  auto small = parsed({{"hostname", "a"}});
  auto big = parsed({{"user_data", "#cloud-config\n" + std::string(60000, 'x')},
                     {"vendor_data", "#cloud-config\n" + std::string(60000, 'y')}});
  EXPECT_LT(rendered_size(small), 4096u);
  EXPECT_GT(rendered_size(big), 120000u);
}

TEST(CloudInitConfig, MergeOrderIsPriorityThenNameThenMachine) {
  auto sel = [](const char* s) { return *proto::parse_selector(s); };
  std::vector<Profile> profiles = {
      {"zz-late", {}, 0, parsed({{"hostname", "from-zz"}, {"metadata", {{"a", "zz"}}}})},
      {"aa-early",
       {},
       0,
       parsed({{"hostname", "from-aa"}, {"metadata", {{"a", "aa"}, {"b", "aa"}}}})},
      {"rack", sel("rack=r12"), -5, parsed({{"ssh_authorized_keys", {kKey}}})},
      {"other-rack", sel("rack=r13"), 0, parsed({{"hostname", "never"}})},
  };
  const std::map<std::string, std::string> labels = {{"rack", "r12"}};
  auto e = merge(profiles, labels, std::nullopt);
  EXPECT_EQ(e.sources,
            (std::vector<std::string>{"profile:rack", "profile:aa-early", "profile:zz-late"}));
  EXPECT_EQ(e.config.hostname, "from-zz");
  EXPECT_EQ(e.config.metadata.at("a"), "zz");
  EXPECT_EQ(e.config.metadata.at("b"), "aa");
  // The machine's own document comes last; keys accumulate without duplicates.
  auto m =
      parsed({{"hostname", "web-07"}, {"ssh_authorized_keys", {kKey, "ssh-rsa AAAAB3Nza other"}}});
  e = merge(profiles, labels, m);
  EXPECT_EQ(e.config.hostname, "web-07");
  EXPECT_EQ(e.sources.back(), "machine");
  ASSERT_TRUE(e.config.ssh_authorized_keys);
  EXPECT_EQ(e.config.ssh_authorized_keys->size(), 2u);
  // Nothing selects a machine in another rack without labels.
  EXPECT_TRUE(merge({profiles[2], profiles[3]}, {}, std::nullopt).sources.empty());
}

TEST(CloudInitConfig, NoCloudFilesCarryTheIdentity) {
  auto c = parsed({{"hostname", "web-01"},
                   {"fqdn", "web-01.example.net"},
                   {"ssh_authorized_keys", {kKey}},
                   {"user_data", "#cloud-config\nruncmd: [true]\n"},
                   {"network_config", {{"version", 2}}}});
  Instance i{42,
             7,
             "rack12-node3",
             "debian:12.1",
             "10.0.0.5",
             "http://kilnd:8080/api/v1/instance/phone-home/tok"};
  auto f = render_nocloud(c, i);
  auto md = json::parse(f.meta_data);
  EXPECT_EQ(md["instance-id"], "kiln-42");
  EXPECT_EQ(md["local-hostname"], "web-01.example.net");
  EXPECT_EQ(md["public-keys"][0], kKey);
  EXPECT_EQ(md["kiln"]["image"], "debian:12.1");
  EXPECT_EQ(f.user_data, "#cloud-config\nruncmd: [true]\n");
  EXPECT_EQ(f.vendor_data.rfind("#cloud-config\n", 0), 0u);
  auto vd = json::parse(f.vendor_data.substr(f.vendor_data.find('\n') + 1));
  EXPECT_EQ(vd["phone_home"]["url"], i.phone_home_url);
  ASSERT_TRUE(f.network_config);
  EXPECT_EQ(json::parse(*f.network_config)["version"], 2);
  // Another deployment, another instance-id: cloud-init runs again.
  i.deployment_id = 43;
  EXPECT_EQ(json::parse(render_nocloud(c, i).meta_data)["instance-id"], "kiln-43");
}

TEST(CloudInitConfig, OperatorVendorDataJoinsPhoneHomeAsMultipart) {
  auto c = parsed({{"vendor_data", "#!/bin/sh\necho vendor\n"}});
  Instance i{1, 1, "m", "x:1", "", "http://k/api/v1/instance/phone-home/t"};
  auto v = render_nocloud(c, i).vendor_data;
  EXPECT_EQ(v.rfind("Content-Type: multipart/mixed; boundary=", 0), 0u);
  EXPECT_NE(v.find("text/x-shellscript"), std::string::npos);
  EXPECT_NE(v.find("echo vendor"), std::string::npos);
  EXPECT_NE(v.find("phone_home"), std::string::npos);
  // Without a phone_home URL, the operator's document alone.
  i.phone_home_url.clear();
  EXPECT_EQ(render_nocloud(c, i).vendor_data, "#!/bin/sh\necho vendor\n");
}

TEST(CloudInitConfig, DefaultHostnameIsTheMachineName) {
  Instance i{1, 9, "node-3", "x:1", "", ""};
  EXPECT_EQ(hostname_of(Config{}, i), "node-3");
  i.machine_name = "Node 3";
  EXPECT_EQ(hostname_of(Config{}, i), "machine-9");
}

TEST(CloudInitConfig, Ec2Tree) {
  auto c = parsed(
      {{"hostname", "web-01"}, {"ssh_authorized_keys", {kKey}}, {"metadata", {{"role", "web"}}}});
  Instance i{5, 2, "m", "debian:12", "10.1.2.3", ""};
  auto root = ec2_meta_data(c, i, {});
  ASSERT_TRUE(root);
  EXPECT_NE(root->find("instance-id"), std::string::npos);
  EXPECT_NE(root->find("public-keys/"), std::string::npos);
  EXPECT_EQ(ec2_meta_data(c, i, {"instance-id"}), "kiln-5");
  EXPECT_EQ(ec2_meta_data(c, i, {"local-ipv4"}), "10.1.2.3");
  EXPECT_EQ(ec2_meta_data(c, i, {"public-keys"}), "0=key-0");
  EXPECT_EQ(ec2_meta_data(c, i, {"public-keys", "0", "openssh-key"}), std::string(kKey) + "\n");
  EXPECT_EQ(ec2_meta_data(c, i, {"tags", "instance", "role"}), "web");
  EXPECT_FALSE(ec2_meta_data(c, i, {"public-keys", "1", "openssh-key"}));
  EXPECT_FALSE(ec2_meta_data(c, i, {"iam"}));
}

}  // namespace
}  // namespace kiln::cloudinit
