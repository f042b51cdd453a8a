// Base64 (RFC 4648, standard alphabet) for the server's JSON bodies.
#pragma once
#include <optional>
#include <string>

namespace m2n2::serve {

std::string base64_encode(const std::string& bytes);
// Decodes padded or unpadded base64; ASCII whitespace is skipped. Anything else that is not
// of the alphabet, padding in the middle, or a length no encoder produces gives nullopt.
std::optional<std::string> base64_decode(const std::string& text);

}  // namespace m2n2::serve
