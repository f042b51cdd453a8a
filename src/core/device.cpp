// Device and thread choices. LibTorch is asked only where it must be: a CUDA device
// exists only in a CUDA build of the backend, and only then is it loaded to look.
#include <omp.h>

#include <opencv2/core.hpp>

#include <dlfcn.h>

#include <csignal>
#include <cstdlib>
#include <new>
#include <thread>

#include "core/fault_injection.hpp"
#include "m2n2/core/error.hpp"
#include "libtorch/backend.hpp"
#include "m2n2/core/memory.hpp"

namespace m2n2 {

Device parse_device(const std::string& s) {
  if (s == "auto") return Device::Auto;
  if (s == "cpu") return Device::Cpu;
  if (s == "cuda") return Device::Cuda;
  throw Error("device: expected auto, cpu or cuda, got '" + s + "'");
}

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::Float32;
  if (s == "fp16") return Precision::Float16;
  if (s == "bf16") return Precision::BFloat16;
  throw Error("precision: expected fp32, fp16 or bf16, got '" + s + "'");
}

std::string to_string(Device d) {
  switch (d) {
    case Device::Auto: return "auto";
    case Device::Cpu: return "cpu";
    case Device::Cuda: return "cuda";
  }
  return "?";
}

std::string to_string(Precision p) {
  switch (p) {
    case Precision::Float32: return "fp32";
    case Precision::Float16: return "fp16";
    case Precision::BFloat16: return "bf16";
  }
  return "?";
}

std::string one_line_message(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "out of memory (std::bad_alloc)";
  std::string m = e.what();
  // cv::Exception: "OpenCV(4.6.0) /path/file.cpp:123: error: (-215:Assertion failed) cond in function 'f'"
  if (const auto* cv_e = dynamic_cast<const cv::Exception*>(&e))
    m = "OpenCV error in " + cv_e->func + ": " + cv_e->err;
  const auto nl = m.find_first_of("\r\n");
  if (nl != std::string::npos) m.resize(nl);
  while (!m.empty() && (m.back() == ' ' || m.back() == '\t')) m.pop_back();
  return m.empty() ? std::string("unknown error") : m;
}

bool is_out_of_memory(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e)) return true;
  const std::string m = e.what();
  return m.find("out of memory") != std::string::npos || m.find("CUDA error: out of memory") != std::string::npos;
}

void inject_fault(const std::string& name, bool on_cpu) {
  const char* spec = std::getenv("M2N2_INJECT_FAULT");
  if (!spec) return;
  const std::string s = spec;
  const auto at = s.find('@');
  if (at == std::string::npos || s.substr(at + 1) != name) return;
  const std::string kind = s.substr(0, at);
  if (kind == "cv") CV_Assert(name.empty() && "injected fault");
  if (kind == "bad_alloc") throw std::bad_alloc();
  if (kind == "kill") std::raise(SIGKILL);
  if (kind == "c10" || (kind == "cuda_oom" && !on_cpu)) detail::torch_backend().throw_injected(kind);
}

bool cuda_available() {
#if M2N2_TORCH_HAS_CUDA
  return detail::torch_backend().cuda_available();
#else
  return false;  // the backend was built against a CPU-only LibTorch
#endif
}

Device resolve(Device d) {
  if (d == Device::Auto) return cuda_available() ? Device::Cuda : Device::Cpu;
  if (d == Device::Cuda && !cuda_available())
    throw Error("device cuda: no CUDA device (or this LibTorch build has no CUDA support)");
  return d;
}

static int g_threads = 0;

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  g_threads = n;
  omp_set_num_threads(n);
  if (detail::TorchBackend* b = detail::torch_backend_if_loaded()) b->set_num_threads(n);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

namespace detail {
int configured_threads() { return g_threads; }
}  // namespace detail

double device_free_bytes(Device d) {
  if (resolve(d) != Device::Cuda) return available_memory_bytes();
  // The CUDA runtime is reached through the dynamic loader, so that the same code
  // builds against CPU-only and CUDA LibTorch: the library LibTorch already loaded
  // is found first (RTLD_NOLOAD), else a versioned name.
  using MemGetInfo = int (*)(size_t*, size_t*);
  static MemGetInfo fn = []() -> MemGetInfo {
    for (const char* name : {"libcudart.so", "libcudart.so.12", "libcudart.so.11.0"}) {
      void* h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
      if (!h) h = dlopen(name, RTLD_LAZY);
      if (h)
        if (void* f = dlsym(h, "cudaMemGetInfo")) return reinterpret_cast<MemGetInfo>(f);
    }
    return nullptr;
  }();
  size_t free_bytes = 0, total = 0;
  if (!fn || fn(&free_bytes, &total) != 0) return 0;
  // Memory LibTorch's caching allocator holds but does not use is free to it as well;
  // it is not counted here, which errs on the side of refusing.
  return static_cast<double>(free_bytes);
}

}  // namespace m2n2
