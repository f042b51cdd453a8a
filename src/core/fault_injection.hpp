// Private test hook of the core and the CLI (not part of the public headers).
#pragma once
#include <string>

namespace m2n2 {

// Test hook: when the environment variable M2N2_INJECT_FAULT is "KIND@NAME" and `name`
// equals NAME, throws the kind of exception a real failure there would raise:
// cv (cv::Exception), bad_alloc, c10 (c10::Error) or cuda_oom (c10::Error saying "CUDA
// out of memory"; not thrown when `on_cpu`, as the real one never is); or, for kill, the
// process is killed there (SIGKILL), as a user or the OOM killer would. Does nothing otherwise.
void inject_fault(const std::string& name, bool on_cpu = false);

}  // namespace m2n2
