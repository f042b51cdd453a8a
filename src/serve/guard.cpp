#include "serve/guard.hpp"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>

#include "m2n2/m2n2.hpp"

namespace m2n2::serve {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

// Compares without stopping at the first difference (the time says nothing of the token).
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::string& c = a.size() == b.size() ? b : a;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ c[i]);
  return diff == 0;
}

// "name:port" of a Host header or an allow-list entry, split; IPv6 stays in brackets.
void split_host(const std::string& value, std::string& name, std::string& port) {
  const size_t close = value.rfind(']');
  const size_t colon = value.rfind(':');
  if (colon != std::string::npos && (close == std::string::npos || colon > close)) {
    name = lower(value.substr(0, colon));
    port = value.substr(colon + 1);
  } else {
    name = lower(value);
    port.clear();
  }
}

bool changes_state(const std::string& method) { return method != "GET" && method != "HEAD"; }

}  // namespace

std::string random_token() {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string t;
  for (int i = 0; i < 12; ++i) {
    const uint32_t v = rd();
    for (int s = 28; s >= 0; s -= 4) t += hex[(v >> s) & 15];
  }
  return t.substr(0, 48);
}

std::string read_token_file(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) throw InvalidArgument("--token-file " + path + ": cannot read a line");
  line = trim(line);
  if (line.size() < 16) throw InvalidArgument("--token-file " + path + ": the token must have at least 16 characters");
  if (!std::all_of(line.begin(), line.end(), [](unsigned char c) { return c > 32 && c < 127; }))
    throw InvalidArgument("--token-file " + path + ": the token must be printable ASCII without spaces");
  return line;
}

bool host_allowed(const GuardConfig& config, const std::string& host_header) {
  std::string name, port;
  split_host(trim(host_header), name, port);
  if (name.empty()) return false;
  const std::string bound = std::to_string(config.port);
  std::string bind = lower(config.bind_host);
  if (bind.find(':') != std::string::npos && bind.front() != '[') bind = "[" + bind + "]";
  for (const std::string& known : {std::string("localhost"), std::string("127.0.0.1"), std::string("[::1]"), bind})
    if (name == known && port == bound) return true;
  for (const auto& entry : config.allow_hosts) {
    std::string n, p;
    split_host(entry, n, p);
    if (name == n && (p.empty() || p == port)) return true;
  }
  return false;
}

Refusal check_request(const GuardConfig& config, const httplib::Request& req) {
  if (req.path == "/health") return {};
  if (!host_allowed(config, req.get_header_value("Host")))
    return {403, "Host \"" + req.get_header_value("Host") + "\" is not a name of this server (see --allow-host)"};
  if (req.path.rfind("/api/", 0) == 0) {
    const std::string auth = req.get_header_value("Authorization");
    const std::string scheme = "bearer ";
    if (auth.size() <= scheme.size() || lower(auth.substr(0, scheme.size())) != scheme ||
        !same_secret(trim(auth.substr(scheme.size())), config.token))
      return {401, "missing or wrong token (Authorization: Bearer TOKEN; the URL printed at start carries it)"};
  }
  if (!changes_state(req.method)) return {};
  if (req.has_header("Origin")) {
    const std::string origin = req.get_header_value("Origin");
    if (lower(origin) != "http://" + lower(trim(req.get_header_value("Host"))))
      return {403, "Origin \"" + origin + "\" is not this server: cross-site requests are refused"};
  }
  if (lower(req.get_header_value("Sec-Fetch-Site")) == "cross-site")
    return {403, "cross-site request refused (Sec-Fetch-Site: cross-site)"};
  const std::string type = lower(trim(req.get_header_value("Content-Type").substr(0, req.get_header_value("Content-Type").find(';'))));
  if (type != "application/json") return {415, "a request that changes state must have Content-Type: application/json"};
  if (req.has_header("Transfer-Encoding") || !req.has_header("Content-Length"))
    return {411, "the body must have a Content-Length (chunked bodies are refused)"};
  const std::string length = trim(req.get_header_value("Content-Length"));
  if (length.empty() || length.size() > 18 || !std::all_of(length.begin(), length.end(), ::isdigit))
    return {400, "Content-Length is not a number"};
  if (std::stoull(length) > config.max_body_bytes)
    return {413, "request body too large (" + length + " bytes; --max-body is " + std::to_string(config.max_body_bytes) + ")"};
  return {};
}

}  // namespace m2n2::serve
