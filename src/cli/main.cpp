// m2n2 — training-free interactive segmentation (M2N2) from the command line.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "libtorch/backend.hpp"
#include "m2n2/version.hpp"

namespace m2n2::cli {
const char* build_commit();  // build_info.cpp, generated at build time
const char* build_type();

namespace {
// m2n2 --version: version, commit, build type and the backends, without loading LibTorch.
std::string version_text() {
  std::string s = std::string("m2n2 ") + M2N2_VERSION + "\ncommit: " + build_commit() + "\nbuild: " + build_type();
  const std::string where = detail::torch_backend_location();
  if (!detail::torch_backend_built())
    s += "\nLibTorch backend: no (built with -DM2N2_WITH_TORCH=OFF)";
  else if (where.empty())
    s += "\nLibTorch backend: not found (libm2n2_torch.so beside m2n2, in ../lib/m2n2 or $M2N2_TORCH_BACKEND)";
  else
    s += "\nLibTorch backend: yes (" + where + ")";
  s += detail::torch_backend_has_cuda() ? "\nCUDA backend: yes (when a device is present)"
                                        : "\nCUDA backend: no (LibTorch without CUDA, or no LibTorch)";
  return s;
}
}  // namespace
}  // namespace m2n2::cli

int main(int argc, char** argv) {
  m2n2::keep_freed_memory();
  CLI::App app{
      "m2n2: training-free interactive image segmentation with Markov-maps of attention (M2N2, CVPR 2025).\n"
      "stdout carries data only; logs go to stderr. Exit: 0 success, 1 some items failed, 2 usage error."};
  app.require_subcommand(1);
  app.set_version_flag("--version", m2n2::cli::version_text);
  int code = 0;
  m2n2::cli::register_segment(app, code);
  m2n2::cli::register_markov_map(app, code);
  m2n2::cli::register_attention(app, code);
  m2n2::cli::register_next_click(app, code);
  m2n2::cli::register_eval(app, code);
  m2n2::cli::register_auto(app, code);
  m2n2::cli::register_cache(app, code);
  m2n2::cli::register_serve(app, code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "m2n2: error: %s (see m2n2 --help)\n", e.what());
    return m2n2::cli::kUsage;
  }
  return code;
}
