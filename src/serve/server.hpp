// `m2n2 serve`: a small HTTP server (cpp-httplib) with an embedded annotation page and
// a JSON API over the engine: one session per image, prepared in the background, kept
// within a memory budget. Only files of the images folder are ever read for a request.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "m2n2/m2n2.hpp"

namespace m2n2::serve {

struct ServeOptions {
  std::string images_dir;          // the folder whose images are annotated
  std::string out_dir;             // masks and clicks.json
  std::string clicks_file;         // click file to resume from ("" = OUT/clicks.json if present)
  std::string host = "127.0.0.1";  // bind address
  int port = 8765;                 // 0 = any free port
  double memory_budget = 0;        // bytes of prepared sessions kept at once (0 = no bound)
  size_t max_body_bytes = 1 << 20; // larger request bodies get 413
  size_t max_clicks = 1000;        // distinct clicks per request (422 beyond)
  int64_t max_pixels = 400000000;  // images larger than this are refused (422)
  std::string token;               // the API's bearer token ("" = a random one per start)
  std::vector<std::string> allow_hosts;  // more names the Host header may carry (NAME or NAME:PORT)
  WarnFn info;                     // one-line log messages
  WarnFn warn;                     // one-line warnings
};

class Server {
 public:
  // Sets up the engine (its progress goes to the sessions' status), lists the images and
  // loads earlier clicks. Throws InvalidArgument for a bad folder or click file.
  Server(EngineOptions engine, ServeOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the address; returns the port (the chosen one with port 0). Throws Error.
  int bind();
  // Serves until stop() (call bind() first).
  void run();
  // Ends run() after the requests in flight; safe from any thread (not a signal handler).
  void stop();

  size_t image_count() const;
  // The bearer token the API asks for (Authorization: Bearer TOKEN).
  const std::string& token() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace m2n2::serve
