// m2n2 cache info | clear: the attention cache's folder, size and cap.
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"

namespace m2n2::cli {

void register_cache(CLI::App& app, int& code) {
  auto o = std::make_shared<CommonOptions>();
  auto* sub = app.add_subcommand("cache", "The attention cache: info (folder, entries, size, cap) or clear");
  sub->require_subcommand(1);
  for (const char* name : {"info", "clear"}) {
    auto* cmd = sub->add_subcommand(name, name[0] == 'i' ? "Print the cache's folder, entries and size" : "Empty the cache");
    add_common(cmd, *o);
    cmd->callback([o, &code, cmd]() {
      code = guarded([&]() {
        setup(*o);
        AttentionCache cache(cache_dir(*o));
        const bool clear = cmd->get_name() == "clear";
        const int removed = clear ? cache.clear() : 0;
        const AttentionCache::Stats s = cache.stats();
        nlohmann::json j = {{"dir", cache.dir()}, {"entries", s.entries}, {"bytes", s.bytes},
                            {"max_bytes", cache_max_bytes(*o)}, {"stale_files", s.stale_files},
                            {"stale_bytes", s.stale_bytes}, {"oldest_use", s.oldest_use}, {"newest_use", s.newest_use}};
        if (clear) j["removed_files"] = removed;
        std::cout << j.dump() << "\n";
        return static_cast<int>(kOk);
      });
    });
  }
}

}  // namespace m2n2::cli
