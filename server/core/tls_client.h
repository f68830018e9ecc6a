// core/tls_client.h — the client side of TLS, as every kilnd client does it (a BMC's Redfish
// service, another kilnd instance): TLS 1.2 or newer, the server's certificate checked against a
// CA file and against the host the URL names (an IP address: the certificate's IP SAN), SNI for
// a name.
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "core/result.h"

namespace kiln {

// A client context verifying servers against `ca_file` (PEM; "" = the system's trust store).
// kInvalid naming `what` when the file holds no certificate that loads.
Result<std::unique_ptr<boost::asio::ssl::context>> tls_client_context(const std::string& ca_file,
                                                                      const std::string& what);

// Before the handshake on `ssl`: sends SNI when `host` is a name and, when `verify`, requires
// the certificate to be for `host`. kInvalid when `host` cannot be checked.
Status tls_expect_host(SSL* ssl, const std::string& host, bool verify);

// After a failed handshake on `ssl`: "certificate is not trusted: <why>" when the certificate
// check failed, else "" (the failure was elsewhere).
std::string tls_certificate_failure(SSL* ssl);

}  // namespace kiln
