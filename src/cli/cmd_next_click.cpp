// m2n2 next-click: the click simulator of a NoC protocol, on mask files.
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "m2n2/io/click_file.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/eval/click_simulator.hpp"

namespace m2n2::cli {

void register_next_click(CLI::App& app, int& code) {
  struct Opt {
    CommonOptions common;
    std::string gt, pred, void_path, protocol = "m2n2";
    std::vector<std::string> prev;
  };
  auto o = std::make_shared<Opt>();
  auto* sub = app.add_subcommand("next-click", "Print the next simulated click {\"x\",\"y\",\"positive\"} of a NoC protocol");
  sub->add_option("--gt", o->gt, "Ground-truth mask (non-zero = object; a palette PNG by index: 0 background, 255 void)")->required();
  sub->add_option("--pred", o->pred, "Current prediction (non-zero = object)")->required();
  sub->add_option("--void", o->void_path, "Void mask (non-zero = ignored; used by ritm)");
  sub->add_option("--prev", o->prev, "Earlier clicks X,Y (repeatable; used by ritm)");
  sub->add_option("--protocol", o->protocol, "m2n2 or ritm")->capture_default_str();
  add_common(sub, o->common, false);
  sub->callback([o, &code]() {
    code = guarded([&]() {
      setup(o->common);
      Protocol p;
      try {
        p = parse_protocol(o->protocol);
      } catch (const Error& e) {
        throw UsageError(e.what());
      }
      std::vector<cv::Point> prev;
      for (const auto& s : o->prev) {
        const auto q = parse_point(s);
        prev.emplace_back(pixel_coordinate(q.x), pixel_coordinate(q.y));
      }
      // A palette ground truth: index 0 background, 255 void, others object (read_mask
      // gives void as 128). Void counts as object for m2n2, as ignored for ritm, as eval does.
      const LabelImage gl = read_label_image(o->gt);
      cv::Mat gt = read_mask(o->gt), pred = read_mask(o->pred), vd;
      if (!o->void_path.empty()) vd = read_mask(o->void_path);
      if (gl.palette && p == Protocol::Ritm) {
        const cv::Mat v = gl.values == 255;
        gt.setTo(0, v);
        if (vd.empty()) vd = v;
        else if (vd.size() == v.size()) vd |= v;
      }
      if (gt.size() != pred.size()) throw Error(o->pred + ": size differs from " + o->gt);
      if (!vd.empty() && vd.size() != gt.size()) throw Error(o->void_path + ": size differs from " + o->gt);
      const auto c = next_click(gt, pred, vd, prev, p);
      std::cout << nlohmann::json{{"x", c.x}, {"y", c.y}, {"positive", c.positive}}.dump() << "\n";
      return static_cast<int>(kOk);
    });
  });
}

}  // namespace m2n2::cli
