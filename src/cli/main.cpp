// m2n2 — training-free interactive segmentation (M2N2) from the command line.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "commands.hpp"
#include "common.hpp"

int main(int argc, char** argv) {
  m2n2::keep_freed_memory();
  CLI::App app{
      "m2n2: training-free interactive image segmentation with Markov-maps of attention (M2N2, CVPR 2025).\n"
      "stdout carries data only; logs go to stderr. Exit: 0 success, 1 some items failed, 2 usage error."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "m2n2 0.1.0");
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
