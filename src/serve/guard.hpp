// The access checks of `m2n2 serve`, applied to every request before it is routed and
// before its body is read (see docs/security.md): the Host allow-list (DNS rebinding),
// the bearer token (other users and other websites), Content-Type / Origin /
// Sec-Fetch-Site on requests that change state (cross-site writes), and the body size
// (chunked and length-less bodies are refused, since they could not be bounded first).
#pragma once
#include <string>
#include <vector>

namespace httplib {
struct Request;
}

namespace m2n2::serve {

struct GuardConfig {
  std::string token;                     // Authorization: Bearer TOKEN on /api/*
  std::string bind_host;                 // the --host value
  int port = 0;                          // the port bound
  std::vector<std::string> allow_hosts;  // --allow-host: NAME (any port) or NAME:PORT
  size_t max_body_bytes = 1 << 20;
};

// Why a request is refused: an HTTP status (0 = let it through) and a one-line message.
struct Refusal {
  int status = 0;
  std::string message;
  explicit operator bool() const { return status != 0; }
};

// A random token: 48 hexadecimal digits from the system's random source.
std::string random_token();
// The token of --token-file: its first line, trimmed; throws InvalidArgument when the file
// cannot be read or the token is empty, shorter than 16 characters or not printable ASCII.
std::string read_token_file(const std::string& path);

// True for the Host header values of GuardConfig: localhost, 127.0.0.1 and [::1] with
// the port, the --host value with the port, and the --allow-host names.
bool host_allowed(const GuardConfig& config, const std::string& host_header);

// The checks in order: Host (403), token on /api/* (401; /health and the page's own
// files need none), then for methods other than GET/HEAD: foreign Origin or
// Sec-Fetch-Site: cross-site (403), Content-Type other than application/json (415),
// a body without Content-Length (411) or larger than max_body_bytes (413).
Refusal check_request(const GuardConfig& config, const httplib::Request& req);

}  // namespace m2n2::serve
