#include "m2n2/io/npy.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <vector>

#include "m2n2/core/error.hpp"
#include "m2n2/core/memory.hpp"

namespace m2n2 {
namespace fs = std::filesystem;

int64_t NpyArray::size() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw Error(name + ": " + what);
}

// Extracts the value text of key `key` in the Python dict literal of the header.
std::string dict_value(const std::string& header, const std::string& key, const std::string& name) {
  const std::string k1 = "'" + key + "'";
  auto pos = header.find(k1);
  if (pos == std::string::npos) fail(name, "not a valid .npy file (header has no " + key + ")");
  pos = header.find(':', pos + k1.size());
  if (pos == std::string::npos) fail(name, "not a valid .npy file (malformed header)");
  ++pos;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  if (pos >= header.size()) fail(name, "not a valid .npy file (malformed header)");
  size_t end;
  if (header[pos] == '\'') {
    end = header.find('\'', pos + 1);
    if (end == std::string::npos) fail(name, "not a valid .npy file (malformed header)");
    return header.substr(pos + 1, end - pos - 1);
  }
  if (header[pos] == '(') {
    end = header.find(')', pos);
    if (end == std::string::npos) fail(name, "not a valid .npy file (malformed header)");
    return header.substr(pos, end - pos + 1);
  }
  end = header.find_first_of(",}", pos);
  if (end == std::string::npos) fail(name, "not a valid .npy file (malformed header)");
  return header.substr(pos, end - pos);
}

template <typename T>
void convert(const char* src, int64_t n, std::vector<float>& out) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    out[static_cast<size_t>(i)] = static_cast<float>(v);
  }
}

}  // namespace

namespace {
// The header of .npy bytes (at least the whole header): shape, dtype, where the data
// starts, how many values and bytes per value.
struct NpyHeader {
  NpyArray arr;  // shape and dtype; no data
  std::string kind;
  size_t data_off = 0, item = 0;
  int64_t n = 0;
};

NpyHeader parse_header(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    fail(name, "not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail(name, "truncated .npy header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    fail(name, "unsupported .npy format version " + std::to_string(major));
  }
  if (bytes.size() < offset + header_len) fail(name, "truncated .npy header");
  const std::string header = bytes.substr(offset, header_len);
  NpyArray arr;
  arr.dtype = dict_value(header, "descr", name);
  const std::string fortran = dict_value(header, "fortran_order", name);
  if (fortran.find("True") != std::string::npos) fail(name, "Fortran-ordered arrays are not supported");
  const std::string shape = dict_value(header, "shape", name);
  // parse "(a, b, c)"
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') fail(name, "malformed shape '" + shape + "'");
  {
    std::string inner = shape.substr(1, shape.size() - 2);
    std::stringstream ss(inner);
    std::string tok;
    while (std::getline(ss, tok, ',')) {
      size_t a = tok.find_first_not_of(" \t");
      if (a == std::string::npos) continue;
      size_t b = tok.find_last_not_of(" \tL");
      const std::string t = tok.substr(a, b - a + 1);
      if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos)
        fail(name, "malformed shape " + shape);
      if (t.size() > 12) fail(name, "absurd dimension in shape " + shape);
      arr.shape.push_back(std::stoll(t));
    }
  }
  int64_t n = 1;
  for (auto s : arr.shape) {
    if (s < 0) fail(name, "negative dimension");
    if (s > 0 && n > std::numeric_limits<int64_t>::max() / s / 8) fail(name, "absurd shape " + shape);
    n *= s;
  }
  std::string d = arr.dtype;
  if (d.size() < 2) fail(name, "unsupported dtype '" + d + "'");
  const char order = d[0];
  if (order == '>') fail(name, "big-endian arrays are not supported (dtype '" + d + "')");
  const std::string kind = d.substr(1);
  size_t item;
  if (kind == "f4" || kind == "i4" || kind == "u4") item = 4;
  else if (kind == "f2" || kind == "i2" || kind == "u2") item = 2;
  else if (kind == "f8" || kind == "i8" || kind == "u8") item = 8;
  else if (kind == "u1" || kind == "i1" || kind == "b1") item = 1;
  else fail(name, "unsupported dtype '" + d + "' (expected float16/float32/float64 or an integer type)");
  NpyHeader h;
  h.arr = std::move(arr);
  h.kind = kind;
  h.data_off = offset + header_len;
  h.item = item;
  h.n = n;
  return h;
}

}  // namespace

NpyArray parse_npy(const std::string& bytes, const std::string& name) {
  NpyHeader h = parse_header(bytes, name);
  NpyArray arr = std::move(h.arr);
  const std::string& kind = h.kind;
  const int64_t n = h.n;
  const size_t data_off = h.data_off;
  const size_t need = static_cast<size_t>(n) * h.item;
  if (bytes.size() - data_off < need)
    fail(name, "truncated .npy data (" + std::to_string(bytes.size() - data_off) + " bytes, shape needs " +
                   std::to_string(need) + ")");
  arr.data.resize(static_cast<size_t>(n));
  const char* src = bytes.data() + data_off;
  if (kind == "f4") convert<float>(src, n, arr.data);
  else if (kind == "f8") convert<double>(src, n, arr.data);
  else if (kind == "f2") {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      arr.data[static_cast<size_t>(i)] = half_to_float(h);
    }
  } else if (kind == "i4") convert<int32_t>(src, n, arr.data);
  else if (kind == "u4") convert<uint32_t>(src, n, arr.data);
  else if (kind == "i2") convert<int16_t>(src, n, arr.data);
  else if (kind == "u2") convert<uint16_t>(src, n, arr.data);
  else if (kind == "i8") convert<int64_t>(src, n, arr.data);
  else if (kind == "u8") convert<uint64_t>(src, n, arr.data);
  else if (kind == "i1") convert<int8_t>(src, n, arr.data);
  else convert<uint8_t>(src, n, arr.data);
  return arr;
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, expected a file");
  if (!fs::exists(path, ec)) throw Error(path + ": no such file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(path + ": read error");
  return ss.str();
}

NpyArray read_npy(const std::string& path) {
  // float32 data is read straight into the array (no copy of the file in memory: an
  // attention map at grid 128 is 1 GiB); other dtypes go through parse_npy.
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, expected a file");
  if (!fs::exists(path, ec)) throw Error(path + ": no such file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  std::string head(12, '\0');
  f.read(&head[0], 12);
  head.resize(static_cast<size_t>(f.gcount()));
  size_t header_end = head.size();
  if (head.size() >= 10 && std::memcmp(head.data(), "\x93NUMPY", 6) == 0) {
    const int major = static_cast<unsigned char>(head[6]);
    if (major == 1) header_end = 10 + (static_cast<unsigned char>(head[8]) | (static_cast<unsigned char>(head[9]) << 8));
    else if (head.size() >= 12) {
      size_t len = 0;
      for (int i = 0; i < 4; ++i) len |= static_cast<size_t>(static_cast<unsigned char>(head[8 + i])) << (8 * i);
      header_end = 12 + std::min<size_t>(len, 1 << 20);
    }
  }
  if (header_end > head.size()) {
    const size_t have = head.size();
    head.resize(header_end);
    f.read(&head[have], static_cast<std::streamsize>(header_end - have));
    head.resize(have + static_cast<size_t>(f.gcount()));
  }
  NpyHeader h = parse_header(head, path);
  if ((h.kind != "f4" && h.kind != "f2") || h.data_off != head.size()) return parse_npy(read_file(path), path);
  const auto size = fs::file_size(path, ec);
  const size_t need = static_cast<size_t>(h.n) * h.item;
  if (ec || size < h.data_off || size - h.data_off < need)
    fail(path, "truncated .npy data (" + std::to_string(ec ? 0 : size - std::min<uintmax_t>(size, h.data_off)) +
                   " bytes, shape needs " + std::to_string(need) + ")");
  NpyArray arr = std::move(h.arr);
  arr.data.reserve(static_cast<size_t>(h.n));  // allocated, not yet written: huge pages can still back it
  advise_huge_pages(arr.data.data(), static_cast<size_t>(h.n) * sizeof(float));
  arr.data.resize(static_cast<size_t>(h.n));
  if (h.kind == "f4") {
    f.read(reinterpret_cast<char*>(arr.data.data()), static_cast<std::streamsize>(need));
    if (static_cast<size_t>(f.gcount()) != need) throw Error(path + ": read error");
    return arr;
  }
  // float16 (the cache's dtype): read in chunks, widened by the vectorised
  // conversion (exact: every fp16 value is a float).
  constexpr int64_t kChunk = 1 << 21;
  std::vector<uint16_t> buf(static_cast<size_t>(std::min<int64_t>(kChunk, std::max<int64_t>(h.n, 1))));
  for (int64_t i = 0; i < h.n; i += kChunk) {
    const int64_t m = std::min(kChunk, h.n - i);
    f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(m * 2));
    if (f.gcount() != m * 2) throw Error(path + ": read error");
    halves_to_floats(buf.data(), arr.data.data() + i, static_cast<size_t>(m));
  }
  return arr;
}

std::string encode_npy(const float* data, const std::vector<int64_t>& shape, NpyDtype dtype) {
  std::string shp = "(";
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    shp += std::to_string(shape[i]);
    shp += (shape.size() == 1 || i + 1 < shape.size()) ? "," : "";
    if (i + 1 < shape.size()) shp += " ";
    n *= shape[i];
  }
  shp += ")";
  std::string header = std::string("{'descr': '") + (dtype == NpyDtype::Float32 ? "<f4" : "<f2") +
                       "', 'fortran_order': False, 'shape': " + shp + ", }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  if (dtype == NpyDtype::Float32) {
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n) * 4);
  } else {
    const size_t at = out.size();
    out.resize(at + static_cast<size_t>(n) * 2);
    std::vector<uint16_t> halves(static_cast<size_t>(n));
    floats_to_halves(data, halves.data(), static_cast<size_t>(n));
    std::memcpy(&out[at], halves.data(), halves.size() * 2);
  }
  return out;
}

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape, NpyDtype dtype) {
  write_file_atomic(path, encode_npy(data, shape, dtype));
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (fs::is_directory(p, ec)) throw Error(path + ": is a directory");
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(::getpid()));
  const fs::path tmp = dir / ("." + p.filename().string() + ".tmp" + std::to_string(rng() % 1000000000ULL));
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw Error(path + ": cannot write (" + std::strerror(errno) + ")");
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) {
      f.close();
      fs::remove(tmp, ec);
      throw Error(path + ": write failed (disk full?)");
    }
  }
  fs::rename(tmp, p, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(path + ": cannot rename temporary file into place");
  }
}

}  // namespace m2n2
