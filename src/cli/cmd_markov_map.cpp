// m2n2 markov-map and m2n2 attention: the intermediate products of one image.
#include <spdlog/spdlog.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "m2n2/io/click_file.hpp"
#include "m2n2/attention/attention_file.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/io/visuals.hpp"

namespace m2n2::cli {

void register_markov_map(CLI::App& app, int& code) {
  struct Opt {
    CommonOptions common;
    M2N2Flags m2n2;
    std::string image, point, npy, png;
    bool lowres = false;
  };
  auto o = std::make_shared<Opt>();
  auto* sub = app.add_subcommand("markov-map", "Write the Markov-map / distance map of one click");
  sub->add_option("--image", o->image, "Image")->required();
  sub->add_option("--point", o->point, "Click X,Y in image pixels")->required();
  sub->add_option("--npy", o->npy, "Output .npy (float32)")->required();
  sub->add_flag("--lowres", o->lowres, "Write the grid Markov-map (iteration counts) instead of the image-size distance map");
  sub->add_option("--png", o->png, "Also write a colour heatmap");
  add_common(sub, o->common);
  add_m2n2_flags(sub, o->m2n2);
  sub->callback([o, &code]() {
    code = guarded([&]() {
      setup(o->common);
      const cv::Point2d pt = parse_point(o->point);
      auto engine = make_engine(o->common, o->m2n2);
      LoadedImage li = read_rgb(o->image);
      const Click c{pt.x, pt.y, true};
      const cv::Point p = click_pixel(c);
      try {
        check_clicks_inside({c}, li.rgb.size());
      } catch (const Error&) {
        throw UsageError(o->image + ": --point " + o->point + " is outside the " + std::to_string(li.rgb.cols) + "x" +
                         std::to_string(li.rgb.rows) + " image");
      }
      auto session = engine->open(li.rgb, o->image);
      cv::Mat m = o->lowres ? session->markov_map(p) : session->distance_map(p);
      m = m.clone();
      write_npy(o->npy, m.ptr<float>(), {m.rows, m.cols});
      if (!o->png.empty()) write_png_atomic(o->png, heatmap_png(m));
      nlohmann::json j = {{"image", o->image}, {"npy", o->npy}, {"shape", {m.rows, m.cols}}, {"lowres", o->lowres}};
      if (!o->png.empty()) j["png"] = o->png;
      std::cout << j.dump() << "\n";
      return static_cast<int>(kOk);
    });
  });
}

void register_attention(CLI::App& app, int& code) {
  struct Opt {
    CommonOptions common;
    std::string image, npy;
    bool fp16 = false;
  };
  auto o = std::make_shared<Opt>();
  auto* sub = app.add_subcommand("attention", "Write the combined attention (h,w,h,w) float32, row-stochastic: what file: reads");
  sub->add_option("--image", o->image, "Image")->required();
  sub->add_option("--npy", o->npy, "Output .npy")->required();
  sub->add_flag("--fp16", o->fp16, "Write float16 instead of float32");
  add_common(sub, o->common);
  sub->callback([o, &code]() {
    code = guarded([&]() {
      setup(o->common);
      auto engine = make_engine(o->common, M2N2Flags());
      LoadedImage li = read_rgb(o->image);
      const AttentionMap m = engine->combined_attention(li.rgb);
      write_attention_npy(o->npy, m, o->fp16);
      nlohmann::json j = {{"image", o->image}, {"npy", o->npy}, {"grid", {m.h, m.w}}, {"source", engine->source_id()}};
      std::cout << j.dump() << "\n";
      return static_cast<int>(kOk);
    });
  });
}

}  // namespace m2n2::cli
