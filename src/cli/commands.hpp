// Registration of the subcommands; each stores its exit code in `code`.
#pragma once
#include <CLI/CLI.hpp>

namespace m2n2::cli {

void register_segment(CLI::App& app, int& code);
void register_markov_map(CLI::App& app, int& code);
void register_attention(CLI::App& app, int& code);
void register_next_click(CLI::App& app, int& code);
void register_eval(CLI::App& app, int& code);    // eval, eval-merge, plot
void register_auto(CLI::App& app, int& code);    // auto, eval-auto
void register_cache(CLI::App& app, int& code);   // cache info, cache clear
void register_serve(CLI::App& app, int& code);   // the annotation server

}  // namespace m2n2::cli
