// m2n2 serve: the annotation page and JSON API (src/serve) on the engine of the flags.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <thread>

#include "commands.hpp"
#include "common.hpp"
#include "m2n2/core/memory.hpp"
#include "serve/guard.hpp"
#include "serve/server.hpp"

namespace m2n2::cli {

namespace {

volatile std::sig_atomic_t g_signal = 0;

struct ServeFlags {
  CommonOptions common;
  M2N2Flags m2n2;
  serve::ServeOptions serve;
  std::string max_body = "1M";
  std::string token_file;
  int64_t max_pixels = 0;  // 0: what fits the memory budget
};

int run_serve(ServeFlags& o) {
  if (o.serve.out_dir.empty()) o.serve.out_dir = o.serve.images_dir + "/m2n2_out";
  check_range("--port", o.serve.port, 0, 65535);
  try {
    o.serve.max_body_bytes = static_cast<size_t>(parse_memory_size(o.max_body));
  } catch (const Error& e) {
    const std::string m = e.what();  // "max_memory: PROBLEM" from the size parser
    throw UsageError("--max-body" + m.substr(m.find(':')));
  }
  // Sessions are kept up to --max-memory, else up to half of what is free now.
  const double limit = max_memory_bytes(o.common);
  o.serve.memory_budget = limit > 0 ? limit : 0.5 * available_memory_bytes();
  // An image costs about 16 bytes a pixel while it is decoded and thumbnailed.
  if (o.max_pixels < 0) throw UsageError("--max-pixels: must be positive (0 = what fits --max-memory)");
  o.serve.max_pixels = o.max_pixels > 0 ? o.max_pixels
                                        : std::clamp<int64_t>(static_cast<int64_t>(o.serve.memory_budget / 16), 1000000, 400000000);
  if (!o.token_file.empty()) o.serve.token = serve::read_token_file(o.token_file);
  o.serve.info = log_info;
  o.serve.warn = log_warn;

  // SIGINT/SIGTERM only raise a flag (whichever thread takes them); a watcher thread
  // stops the server. Set explicitly: a script's background job starts with SIGINT ignored.
  struct sigaction action = {};
  action.sa_handler = [](int sig) { g_signal = sig; };
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::unique_ptr<serve::Server> server;
  try {
    server = std::make_unique<serve::Server>(engine_options(o.common, o.m2n2), o.serve);
  } catch (const MemoryError&) {
    throw;
  } catch (const InvalidArgument&) {
    throw;
  } catch (const Error& e) {
    throw UsageError(e.what());  // a bad --source
  }
  const int port = server->bind();
  if (o.serve.host != "127.0.0.1" && o.serve.host != "localhost" && o.serve.host != "::1")
    spdlog::warn("--host {}: anyone who reaches this address and knows the token can read the images and write masks (plain HTTP: use an SSH tunnel on untrusted networks)",
                 o.serve.host);
  const std::string host = o.serve.host.find(':') != std::string::npos ? "[" + o.serve.host + "]" : o.serve.host;
  spdlog::info("{} images in {}; masks go to {}", server->image_count(), o.serve.images_dir, o.serve.out_dir);
  // The URL is what the user needs from this command: said even with --quiet.
  std::fprintf(stderr, "m2n2: info: serving on http://%s:%d/?token=%s  (Ctrl-C stops)\n", host.c_str(), port,
               server->token().c_str());

  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done && !g_signal) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (g_signal) {
      spdlog::info("stopping (signal {}); saved work is on disk", static_cast<int>(g_signal));
      server->stop();
    }
  });
  server->run();
  done = true;
  watcher.join();
  // A preparation under way ends only at its next stage (seconds for a large image);
  // saves are consistent at any instant (their write order), so it is not waited for long.
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    server.reset();
    closed = true;
  });
  for (int i = 0; i < 20 && !closed; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (!closed) {
    spdlog::info("a preparation is cut short");
    std::fflush(nullptr);
    std::_Exit(kOk);
  }
  closer.join();
  return kOk;
}

}  // namespace

void register_serve(CLI::App& app, int& code) {
  auto o = std::make_shared<ServeFlags>();
  auto* sub = app.add_subcommand("serve", "Annotate a folder in the browser: click, see the mask, save (HTTP server with a JSON API)");
  sub->add_option("--images", o->serve.images_dir, "Folder of images to annotate")->required();
  sub->add_option("--out", o->serve.out_dir, "Where saved masks (OUT/<stem>/<id>.png) and OUT/clicks.json go (default IMAGES/m2n2_out)");
  sub->add_option("--clicks", o->serve.clicks_file, "Click file to resume from (default OUT/clicks.json when it exists)");
  sub->add_option("--host", o->serve.host, "Address to bind (127.0.0.1: this machine only; reach it over an SSH tunnel)")
      ->capture_default_str();
  sub->add_option("--port", o->serve.port, "Port (0 = any free port; the URL is logged)")->capture_default_str();
  sub->add_option("--max-body", o->max_body, "Largest request body accepted (413 beyond)")->capture_default_str();
  sub->add_option("--max-clicks", o->serve.max_clicks, "Most distinct clicks in one request (422 beyond)")->capture_default_str();
  sub->add_option("--max-pixels", o->max_pixels,
                  "Largest image served, in pixels (422 beyond; default: --max-memory / 16 bytes, at most 400M)");
  sub->add_option("--token-file", o->token_file, "Read the API token from the first line of FILE (default: a new random token per start)")
      ->check(CLI::ExistingFile);
  sub->add_option("--allow-host", o->serve.allow_hosts,
                  "Another name the Host header may carry (NAME: any port, NAME:PORT); repeatable. Default: localhost, 127.0.0.1, [::1] and --host");
  add_common(sub, o->common);
  add_exif_option(sub);
  sub->get_option("--max-memory")
      ->description("Memory for prepared images: least recently used ones are dropped beyond it (default: half of what is free at start)");
  add_m2n2_flags(sub, o->m2n2);
  sub->callback([o, &code]() {
    code = guarded([&]() {
      setup(o->common);
      return run_serve(*o);
    });
  });
}

}  // namespace m2n2::cli
