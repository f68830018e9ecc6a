#include "core/tls_client.h"

#include <openssl/x509_vfy.h>

#include <boost/asio/ip/address.hpp>

namespace kiln {

Result<std::unique_ptr<boost::asio::ssl::context>> tls_client_context(const std::string& ca_file,
                                                                      const std::string& what) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    ctx->load_verify_file(ca_file, ec);
  }
  if (ec) {
    return make_error(Errc::kInvalid,
                      what + ": CA file " + (ca_file.empty() ? "(the system's)" : ca_file) +
                          " holds no PEM certificate that can be loaded: " + ec.message());
  }
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

Status tls_expect_host(SSL* ssl, const std::string& host, bool verify) {
  boost::system::error_code not_ip;
  boost::asio::ip::make_address(host, not_ip);
  if (verify) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const bool ok = !not_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1
                            : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0) == 1;
    if (!ok) return make_error(Errc::kInvalid, "cannot check a certificate for '" + host + "'");
  }
  if (not_ip) SSL_set_tlsext_host_name(ssl, host.c_str());  // SNI: names only
  return ok_status();
}

std::string tls_certificate_failure(SSL* ssl) {
  if (const long v = SSL_get_verify_result(ssl); v != X509_V_OK) {
    return std::string("certificate is not trusted: ") + X509_verify_cert_error_string(v);
  }
  return {};
}

}  // namespace kiln
