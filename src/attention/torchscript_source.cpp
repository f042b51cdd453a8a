// The Stable Diffusion path: a TorchScript file exported once by
// scripts/export_sd_attention.py (or the tiny test fixture), loaded by LibTorch.
#include <torch/script.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "attention/sources.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/interactive/markov_operator.hpp"
#include "m2n2/core/memory.hpp"
#include "m2n2/io/json_read.hpp"
#include "attention/device_values.hpp"
#include "core/torch_device.hpp"

namespace m2n2::detail {
namespace {

struct LayerInfo {
  std::string name;
  int h = 0, w = 0;
  float weight = 0;
};

// A feature listed in m2n2-attention/2 metadata (what FeatureMap holds, without values).
FeatureMap feature_info(const nlohmann::json& f, int gh, int gw, const std::string& path) {
  FeatureMap m;
  m.name = f.at("name").get<std::string>();
  m.kind = f.at("kind").get<std::string>();
  m.layer = f.contains("layer") && f["layer"].is_number_integer() ? f["layer"].get<int>() : -1;
  if (!is_feature_kind(m.kind))
    throw Error(path + ": feature '" + m.name + "' has unknown kind '" + m.kind + "' (keys, patch_tokens, cls or cls_attention)");
  std::vector<int64_t> shape = f.at("shape").get<std::vector<int64_t>>();
  const int64_t n = static_cast<int64_t>(gh) * gw;
  const bool per_patch = m.kind != "cls";
  const size_t rank = m.kind == "keys" || m.kind == "patch_tokens" ? 2 : 1;
  if (shape.size() != rank || (per_patch && shape[0] != n) || shape.back() <= 0 || shape.back() > (1 << 16))
    throw Error(path + ": feature '" + m.name + "' of kind " + m.kind + " has shape " + nlohmann::json(shape).dump() +
                ", expected " + (rank == 2 ? "[" + std::to_string(n) + ", C]" : per_patch ? "[" + std::to_string(n) + "]" : "[C]") +
                " for the " + std::to_string(gh) + "x" + std::to_string(gw) + " grid");
  m.h = per_patch ? gh : 1;
  m.w = per_patch ? gw : 1;
  m.dim = m.kind == "cls_attention" ? 1 : static_cast<int>(shape.back());
  return m;
}

class TorchScriptSource : public AttentionSource {
 public:
  TorchScriptSource(const std::string& path, const SourceOptions& opt) : path_(path), opt_(opt) {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw Error(path + ": cannot open TorchScript file");
    torch::jit::ExtraFilesMap extra{{"m2n2.json", ""}};
    device_ = resolve(opt.device);
    try {
      module_ = torch::jit::load(path, torch_device(device_), extra);
    } catch (const c10::Error& e) {
      std::string what = e.what_without_backtrace();
      what = what.substr(0, what.find('\n'));
      throw Error(path + ": not a loadable TorchScript archive (" + what + ")");
    } catch (const std::exception& e) {
      throw Error(path + ": not a loadable TorchScript archive");
    }
    const std::string meta = extra["m2n2.json"];
    if (meta.empty()) throw Error(path + ": TorchScript file has no m2n2 metadata (m2n2.json); export it with scripts/export_sd_attention.py");
    nlohmann::json j;
    try {
      j = read_json(meta, path + ": m2n2.json metadata");
      const std::string format = j.at("format").get<std::string>();
      if (format != "m2n2-attention/1" && format != "m2n2-attention/2")
        throw Error(path + ": unsupported metadata format '" + format + "' (m2n2-attention/1 or /2)");
      input_h_ = j.at("input_size").at(0).get<int>();
      input_w_ = j.at("input_size").at(1).get<int>();
      model_id_ = j.value("model_id", "unknown");
      dtype_ = j.value("dtype", "fp32");
      traced_device_ = j.value("traced_device", "");
      device_neutral_ = j.value("device_neutral", false);
      for (const auto& l : j.at("layers")) {
        LayerInfo li;
        li.name = l.at("name").get<std::string>();
        li.h = l.at("grid").at(0).get<int>();
        li.w = l.at("grid").at(1).get<int>();
        li.weight = l.value("weight", 0.0f);
        if (li.h <= 0 || li.w <= 0 || li.h > 512 || li.w > 512) throw Error(path + ": layer " + li.name + " has an invalid grid");
        layers_.push_back(li);
      }
      // /2: named features on the patch grid ("grid", else the first layer's).
      if (j.contains("features")) {
        int gh = layers_.empty() ? 0 : layers_[0].h, gw = layers_.empty() ? 0 : layers_[0].w;
        if (j.contains("grid")) {
          gh = j.at("grid").at(0).get<int>();
          gw = j.at("grid").at(1).get<int>();
        }
        if (gh <= 0 || gw <= 0 || gh > 512 || gw > 512) throw Error(path + ": invalid grid for the features");
        for (const auto& f : j.at("features")) features_.push_back(feature_info(f, gh, gw, path));
      }
      meta_ = j;
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(path + ": invalid m2n2 metadata (" + std::string(e.what()) + ")");
    }
    if (input_h_ <= 0 || input_w_ <= 0 || input_h_ > 8192 || input_w_ > 8192) throw Error(path + ": invalid input_size in metadata");
    if (layers_.empty()) throw Error(path + ": metadata lists no layers");
    if (dtype_ == "fp16" && device_ == Device::Cpu)
      throw Error(path + ": exported with --fp16, which runs only on CUDA (LibTorch's CPU kernels have no fp16 "
                         "convolutions); use --device cuda, or re-export without --fp16 for the CPU");
    double need = 0;
    for (const auto& l : layers_) need += 4.0 * static_cast<double>(l.h * l.w) * (l.h * l.w);
    for (const auto& f : features_) need += 4.0 * static_cast<double>(f.rows()) * f.dim;
    check_memory(need, opt.max_memory_bytes, path + " (attention maps)", "export at a smaller attention resolution");
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    const auto mtime = std::filesystem::last_write_time(path, ec);
    file_stamp_ = std::to_string(size) + "@" + std::to_string(mtime.time_since_epoch().count());
    module_.eval();
    // The network's dtype is fixed at export (--fp16); the input is always fp32 in [0,1].
  }

  // The cache key: besides the path, everything that changes the output without
  // changing the path — the whole metadata (layers, weights, timestep, input size,
  // dtype), and the file's size and modification time (new weights in the same file).
  std::string id() const override {
    return "torchscript:" + path_ + "|" + model_id_ + "|" + std::to_string(input_h_) + "x" + std::to_string(input_w_) +
           "|" + to_string(device_) + "|" + dtype_ + "|" + file_stamp_ + "|" + meta_.dump();
  }

  Attention compute(const cv::Mat& rgb) override {
    cv::Mat resized;
    cv::resize(rgb, resized, cv::Size(input_w_, input_h_), 0, 0, cv::INTER_AREA);
    at::Tensor x = torch::from_blob(resized.data, {1, input_h_, input_w_, 3}, at::kByte)
                       .permute({0, 3, 1, 2})
                       .to(at::kFloat)
                       .div(255.0)
                       .contiguous();
    x = x.to(torch_device(device_));
    c10::IValue out = run(x);
    if (!all_finite(out)) {
      // Seen with archives of the older export script on Debian's LibTorch 1.13 (CPU):
      // a rare all-NaN output that a second run of the same input does not repeat.
      // Once more, and say so; a second non-finite output is rejected below.
      if (opt_.warn) opt_.warn(path_ + ": the network returned non-finite attention; running it once more");
      out = run(x);
    }
    if (!out.isGenericDict()) throw Error(path_ + ": model output is not a dict of attention maps");
    auto dict = out.toGenericDict();
    Attention a;
    for (const auto& l : layers_) {
      auto it = dict.find(l.name);
      if (it == dict.end()) throw Error(path_ + ": model output lacks layer '" + l.name + "'");
      at::Tensor t = it->value().toTensor().to(at::kFloat).contiguous();
      const int64_t n = static_cast<int64_t>(l.h) * l.w;
      if (t.numel() != n * n) throw Error(path_ + ": layer '" + l.name + "' has " + std::to_string(t.numel()) +
                                          " values, expected " + std::to_string(n) + "x" + std::to_string(n));
      // On a GPU the values stay there (checked, combined and sharpened in place);
      // the host gets them only for the cache or an explicit export.
      AttentionMap m = device_map(l.name, l.h, l.w, l.weight, t);
      t = at::Tensor();
      if (device_ == Device::Cpu) to_host(m);
      validate_attention(m, path_ + " layer " + l.name, 2e-2f);
      a.maps.push_back(std::move(m));
    }
    for (const auto& info : features_) {
      auto it = dict.find(info.name);
      if (it == dict.end())
        throw Error(path_ + ": model output lacks feature '" + info.name + "' listed in its metadata");
      at::Tensor t = it->value().toTensor().to(at::kFloat).to(at::kCPU).contiguous();
      FeatureMap f = info;
      f.data.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
      validate_feature(f, path_);
      a.features.push_back(std::move(f));
    }
    a.meta["source"] = "torchscript";
    a.meta["model_id"] = model_id_;
    a.meta["metadata"] = meta_.dump();
    return a;
  }

 private:
  c10::IValue run(const at::Tensor& x) {
    try {
      torch::NoGradGuard ng;
      return module_.forward({x});
    } catch (const c10::Error& e) {
      std::string what = e.what_without_backtrace();
      what = what.substr(0, what.find('\n'));
      std::string hint;
      if (what.find("device") != std::string::npos || what.find("CUDA") != std::string::npos) {
        hint = device_neutral_ ? ""
                               : "; the archive may be tied to the device it was traced on" +
                                     (traced_device_.empty() ? std::string() : " (" + traced_device_ + ")") +
                                     ": re-export it with the current scripts/export_sd_attention.py, "
                                     "whose archives run on the CPU and on CUDA";
      }
      throw Error(path_ + ": model failed to run (" + what + ")" + hint);
    }
  }

  // Checked where the tensors live (on the GPU for a CUDA run): one flag per layer.
  bool all_finite(const c10::IValue& out) const {
    if (!out.isGenericDict()) return true;  // reported by the caller
    auto dict = out.toGenericDict();
    for (const auto& l : layers_) {
      auto it = dict.find(l.name);
      if (it == dict.end() || !it->value().isTensor()) continue;
      if (!at::isfinite(it->value().toTensor()).all().item<bool>()) return false;
    }
    return true;
  }

  std::string path_;
  SourceOptions opt_;
  Device device_ = Device::Cpu;
  torch::jit::Module module_;
  int input_h_ = 0, input_w_ = 0;
  std::string model_id_, dtype_, traced_device_, file_stamp_;
  bool device_neutral_ = false;
  std::vector<LayerInfo> layers_;
  std::vector<FeatureMap> features_;  // listed in the metadata (no values)
  nlohmann::json meta_;
};

}  // namespace

std::unique_ptr<AttentionSource> make_torchscript_source(const std::string& path, const SourceOptions& opt) {
  return std::make_unique<TorchScriptSource>(path, opt);
}

}  // namespace m2n2::detail
