// Finds the LibTorch backend: linked into this program, or libm2n2_torch.so loaded
// on first use (see backend.hpp).
#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "m2n2/core/error.hpp"
#include "libtorch/backend.hpp"

#ifndef M2N2_WITH_TORCH
#define M2N2_WITH_TORCH 1
#endif
#ifndef M2N2_TORCH_HAS_CUDA
#define M2N2_TORCH_HAS_CUDA 0
#endif

// Defined only where the backend's objects are linked in (tests, benchmarks).
extern "C" m2n2::detail::TorchBackend* m2n2_torch_backend() __attribute__((weak));

namespace m2n2::detail {
namespace {

namespace fs = std::filesystem;

std::atomic<TorchBackend*> g_backend{nullptr};
std::mutex g_load_mutex;

const char* const kLibrary = "libm2n2_torch.so";

// The folder of the file that holds this code (the executable, or a shared library
// that links the core).
fs::path own_folder() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&own_folder), &info) && info.dli_fname && *info.dli_fname) {
    std::error_code ec;
    fs::path p = fs::canonical(fs::path(info.dli_fname), ec);
    if (!ec) return p.parent_path();
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

std::vector<std::string> candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("M2N2_TORCH_BACKEND"); env && *env) {
    out.emplace_back(env);
    return out;
  }
  const fs::path dir = own_folder();
  if (!dir.empty())
    for (const fs::path& p : {dir / kLibrary, dir / ".." / "lib" / "m2n2" / kLibrary, dir / ".." / "lib" / kLibrary})
      out.push_back(p.lexically_normal().string());
  out.emplace_back(kLibrary);  // the loader's own search path
  return out;
}

const char* const kNotBuilt =
    "the LibTorch backend (needed for TorchScript sources, CUDA, diffseg and ncut) is not part of this build "
    "(configured with -DM2N2_WITH_TORCH=OFF)";

TorchBackend* load() {
  if (!M2N2_WITH_TORCH) throw Error(kNotBuilt);
  if (m2n2_torch_backend) return m2n2_torch_backend();
  std::string errors;
  for (const std::string& path : candidates()) {
    const bool by_name = path.find('/') == std::string::npos;
    if (!by_name && !fs::exists(path)) {
      errors += (errors.empty() ? "" : "; ") + path + ": no such file";
      continue;
    }
    // RTLD_LOCAL: LibTorch's symbols stay out of the program's global scope.
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      errors += (errors.empty() ? "" : "; ") + std::string(e ? e : path);
      continue;
    }
    using Entry = TorchBackend* (*)();
    auto entry = reinterpret_cast<Entry>(dlsym(h, "m2n2_torch_backend"));
    if (!entry) {
      errors += (errors.empty() ? "" : "; ") + path + ": no m2n2_torch_backend";
      continue;
    }
    return entry();
  }
  throw Error("the LibTorch backend (" + std::string(kLibrary) +
              ", needed for TorchScript sources, CUDA, diffseg and ncut) could not be loaded: " + errors);
}

}  // namespace

std::string torch_backend_location() {
  if (!M2N2_WITH_TORCH) return "";
  if (m2n2_torch_backend) return "linked in";
  for (const std::string& path : candidates()) {
    std::error_code ec;
    if (path.find('/') != std::string::npos && fs::exists(path, ec)) return path;
  }
  return "";
}

bool torch_backend_built() { return M2N2_WITH_TORCH; }
bool torch_backend_has_cuda() { return M2N2_WITH_TORCH && M2N2_TORCH_HAS_CUDA; }

TorchBackend* torch_backend_if_loaded() {
  if (TorchBackend* b = g_backend.load()) return b;
  if (m2n2_torch_backend) return &torch_backend();
  return nullptr;
}

TorchBackend& torch_backend() {
  if (TorchBackend* b = g_backend.load()) return *b;
  std::lock_guard<std::mutex> lock(g_load_mutex);
  if (TorchBackend* b = g_backend.load()) return *b;
  TorchBackend* b = load();
  // The thread count chosen before LibTorch was loaded applies to it as well.
  if (const int n = configured_threads(); n > 0) b->set_num_threads(n);
  g_backend.store(b);
  return *b;
}

}  // namespace m2n2::detail
