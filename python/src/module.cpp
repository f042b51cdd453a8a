// m2n2._m2n2: the Engine and Session of include/m2n2/m2n2.hpp for Python (pybind11).
// The pure-Python package (python/m2n2/__init__.py) turns user input (arrays, tensors,
// dicts of layers) into the plain arrays taken here, and adds the SAM-style Predictor.
//
// Threads: the GIL is released while an image is prepared and while clicks are
// segmented. An engine and its sessions are used by one thread at a time (m2n2.hpp), so
// every call takes the engine's mutex, always after the GIL has been released (never
// the other way round: no lock-order inversion with the progress callback, which takes
// the GIL to call Python).
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "m2n2/attention/attention_file.hpp"
#include "m2n2/m2n2.hpp"

namespace py = pybind11;
using namespace m2n2;

namespace {

// A bad argument of the caller's: ValueError in Python.
struct ValueFailure : InvalidArgument {
  using InvalidArgument::InvalidArgument;
};

// ------------------------------------------------------------------ parameters

template <class T>
T cast_param(const std::string& key, py::handle v) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!py::isinstance<py::bool_>(v)) throw ValueFailure(key + ": expected True or False");
  } else if constexpr (std::is_integral_v<T>) {
    if (py::isinstance<py::bool_>(v) || !py::isinstance<py::int_>(v)) throw ValueFailure(key + ": expected an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (py::isinstance<py::bool_>(v) || !(py::isinstance<py::int_>(v) || py::isinstance<py::float_>(v)))
      throw ValueFailure(key + ": expected a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!py::isinstance<py::str>(v)) throw ValueFailure(key + ": expected a string");
  }
  try {
    return v.cast<T>();
  } catch (const py::cast_error&) {
    throw ValueFailure(key + ": value out of range");
  }
}

using Setter = std::function<void(const std::string&, py::handle)>;

template <class P, class T>
Setter field(T P::*member, P& target) {
  return [&target, member](const std::string& k, py::handle v) { target.*member = cast_param<T>(k, v); };
}

// Sets each keyword through its setter; an unknown name is a ValueError.
void apply(const std::map<std::string, Setter>& setters, const py::dict& kwargs, const char* what) {
  for (const auto& [k, v] : kwargs) {
    const std::string key = py::str(k);
    auto it = setters.find(key);
    if (it == setters.end()) throw ValueFailure(key + ": unknown " + what + " parameter");
    it->second(key, v);
  }
}

// M2N2Params by the library's field names (op.temperature -> temperature, ...).
void set_m2n2_params(M2N2Params& p, const py::dict& kwargs) {
  std::map<std::string, Setter> s = {
      {"temperature", field(&OperatorParams::temperature, p.op)},
      {"ipf_iterations", field(&OperatorParams::ipf_iterations, p.op)},
      {"two_pass_sinkhorn", field(&OperatorParams::two_pass_sinkhorn, p.op)},
      {"libtorch", field(&OperatorParams::libtorch, p.op)},
      {"precision", [&p](const std::string& k, py::handle v) {
         p.op.precision = parse_precision(cast_param<std::string>(k, v));
       }},
      {"threshold", field(&MarkovParams::threshold, p.markov)},
      {"max_iterations", field(&MarkovParams::max_iterations, p.markov)},
      {"linear_interpolation", field(&MarkovParams::linear_interpolation, p.markov)},
      {"spatial_sigma", field(&JbuParams::spatial_sigma, p.jbu)},
      {"range_sigma", field(&JbuParams::range_sigma, p.jbu)},
      {"flood_fill", field(&M2N2Params::flood_fill, p)},
      {"max_area", field(&ScoringParams::max_area, p.scoring)},
      {"quantization", field(&ScoringParams::quantization, p.scoring)},
      {"use_prior", field(&ScoringParams::use_prior, p.scoring)},
      {"use_edge", field(&ScoringParams::use_edge, p.scoring)},
      {"use_pos", field(&ScoringParams::use_pos, p.scoring)},
      {"use_neg", field(&ScoringParams::use_neg, p.scoring)},
      {"max_table_bytes", field(&M2N2Params::max_table_bytes, p)},
      {"max_side", field(&M2N2Params::max_side, p)},
  };
  apply(s, kwargs, "M2N2");
  check_params(p);
}

DiffSegParams diffseg_params(const py::dict& kwargs) {
  DiffSegParams p;
  std::map<std::string, Setter> s = {
      {"anchors", field(&DiffSegParams::anchors, p)},
      {"log_floor", field(&DiffSegParams::log_floor, p)},
      {"kl_thresholds", [&p](const std::string& k, py::handle v) {
         p.kl_thresholds.clear();
         if (py::isinstance<py::str>(v) || !py::isinstance<py::sequence>(v)) throw ValueFailure(k + ": expected a sequence of numbers");
         for (py::handle x : py::reinterpret_borrow<py::sequence>(v)) p.kl_thresholds.push_back(cast_param<double>(k, x));
       }},
  };
  apply(s, kwargs, "DiffSeg");
  check_params(p);
  return p;
}

NcutParams ncut_params(const py::dict& kwargs) {
  NcutParams p;
  std::map<std::string, Setter> s = {
      {"power", field(&NcutParams::power, p)},
      {"grid", field(&NcutParams::grid, p)},
      {"tau", field(&NcutParams::tau, p)},
      {"min_size", field(&NcutParams::min_size, p)},
      {"max_depth", field(&NcutParams::max_depth, p)},
      {"sweep", field(&NcutParams::sweep, p)},
      {"policy", [&p](const std::string& k, py::handle v) { p.policy = parse_stop_policy(cast_param<std::string>(k, v)); }},
  };
  apply(s, kwargs, "NCut");
  check_params(p);
  return p;
}

// ------------------------------------------------------------------ arrays

cv::Mat image_from_array(const py::array& a) {
  if (!py::isinstance<py::array_t<uint8_t>>(a) || a.ndim() != 3 || a.shape(2) != 3 || a.shape(0) < 1 || a.shape(1) < 1)
    throw ValueFailure("image: expected an HxWx3 uint8 RGB array");
  // A copy in C order: the session keeps its image, whatever the caller does to theirs.
  auto c = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(a);
  if (a.shape(0) > 1 << 20 || a.shape(1) > 1 << 20) throw ValueFailure("image: too large");
  cv::Mat m(static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)), CV_8UC3);
  std::memcpy(m.data, c.data(), m.total() * 3);
  return m;
}

py::array_t<bool> bool_array(const cv::Mat& m) {
  py::array_t<bool> out({m.rows, m.cols});
  bool* o = out.mutable_data();
  for (int y = 0; y < m.rows; ++y) {
    const uint8_t* r = m.ptr<uint8_t>(y);
    for (int x = 0; x < m.cols; ++x) *o++ = r[x] != 0;
  }
  return out;
}

template <class T>
py::array_t<T> copy_array(const cv::Mat& m) {
  cv::Mat c = m.isContinuous() ? m : m.clone();
  py::array_t<T> out({c.rows, c.cols});
  std::memcpy(out.mutable_data(), c.data, c.total() * sizeof(T));
  return out;
}

// (label, float32 values, shape, fp16, weight) -> a validated map, named `label`.
AttentionMap map_from_array(const std::string& label, py::array_t<float, py::array::c_style> a, bool fp16, float weight) {
  NpyArray n;
  n.dtype = fp16 ? "<f2" : "<f4";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) n.shape.push_back(a.shape(i));
  n.data.assign(a.data(), a.data() + a.size());
  AttentionMap m;
  try {
    m = attention_from_array(std::move(n), label);
  } catch (const Error& e) {
    throw ValueFailure(e.what());
  }
  m.name = label;
  m.weight = weight;
  return m;
}

// ------------------------------------------------------------------ engine, session

struct PyEngine {
  std::unique_ptr<Engine> engine;
  std::mutex mutex;  // one call into the engine or its sessions at a time
  py::object progress, warn;
};

struct PySession {
  std::shared_ptr<PyEngine> engine;
  std::unique_ptr<Session> session;
};

// Runs f without the GIL, holding the engine's mutex.
template <class F>
auto unlocked(PyEngine& e, F&& f) {
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(e.mutex);
  return f();
}

void check_point_inside(double x, double y, cv::Size size) {
  try {
    check_clicks_inside({Click{x, y, true}}, size);
  } catch (const Error& e) {
    throw ValueFailure(e.what());
  }
}

std::vector<Click> clicks_from(const py::handle& seq, cv::Size size) {
  if (py::isinstance<py::str>(seq) || !py::isinstance<py::sequence>(seq))
    throw ValueFailure("clicks: expected a sequence of (x, y, positive)");
  std::vector<Click> clicks;
  for (py::handle c : py::reinterpret_borrow<py::sequence>(seq)) {
    if (py::isinstance<py::str>(c) || !py::isinstance<py::sequence>(c) || py::len(c) != 3)
      throw ValueFailure("clicks: each click is (x, y, positive)");
    auto t = py::reinterpret_borrow<py::sequence>(c);
    Click k;
    k.x = cast_param<double>("clicks: x", t[0]);
    k.y = cast_param<double>("clicks: y", t[1]);
    k.positive = py::bool_(t[2]);
    clicks.push_back(k);
  }
  if (clicks.empty()) throw ValueFailure("clicks: at least one click is needed");
  try {
    check_clicks_inside(clicks, size);
  } catch (const Error& e) {
    throw ValueFailure(e.what());
  }
  return clicks;
}

py::object labels_result(const AutoResult& r) {
  py::dict meta;
  for (const auto& [k, v] : r.meta) meta[py::str(k)] = v;
  py::module_ types = py::module_::import("types");
  return types.attr("SimpleNamespace")(py::arg("labels") = copy_array<uint16_t>(r.labels),
                                       py::arg("segments") = r.segments, py::arg("meta") = meta);
}

std::shared_ptr<PyEngine> make_engine(py::object source, const std::string& device, int threads, py::object cache_dir,
                                      int grid, double max_memory_bytes, py::object progress, py::object warn,
                                      py::kwargs params) {
  auto e = std::make_shared<PyEngine>();
  EngineOptions o;
  o.source = source.is_none() ? "default" : py::str(source).cast<std::string>();
  o.cache_dir = cache_dir.is_none() ? "" : py::str(cache_dir).cast<std::string>();
  o.grid = grid;
  o.max_memory_bytes = max_memory_bytes;
  try {
    o.device = parse_device(device);
  } catch (const Error& err) {
    throw ValueFailure(err.what());
  }
  if (threads < 0 || threads > 4096) throw ValueFailure("threads: must be in 0..4096");
  if (grid < 0) throw ValueFailure("grid: must be >= 0");
  set_m2n2_params(o.params, params);
  o.params.op.device = o.device;
  if (!progress.is_none() && !PyCallable_Check(progress.ptr())) throw ValueFailure("progress: expected a callable");
  if (!warn.is_none() && !PyCallable_Check(warn.ptr())) throw ValueFailure("warn: expected a callable");
  e->progress = progress;
  e->warn = warn;
  PyEngine* raw = e.get();  // the engine's options live as long as the PyEngine
  if (!progress.is_none())
    o.progress = [raw](const std::string& stage, double fraction) {
      py::gil_scoped_acquire gil;
      raw->progress(stage, fraction);
    };
  o.warn = [raw](const std::string& message) {
    py::gil_scoped_acquire gil;
    if (!raw->warn.is_none())
      raw->warn(message);
    else
      py::module_::import("warnings").attr("warn")(message, py::module_::import("builtins").attr("RuntimeWarning"), 2);
  };
  set_num_threads(threads);
  try {
    py::gil_scoped_release release;  // a TorchScript source loads LibTorch and the model here
    e->engine = std::make_unique<Engine>(std::move(o));
  } catch (const MemoryError&) {
    throw;
  } catch (const Error& err) {
    throw ValueFailure(err.what());  // a bad source is a bad argument (the CLI's usage error)
  }
  return e;
}

std::unique_ptr<PySession> open_session(const std::shared_ptr<PyEngine>& e, const py::array& image, const py::list& maps,
                                        const std::string& name) {
  cv::Mat rgb = image_from_array(image);
  auto s = std::make_unique<PySession>();
  s->engine = e;
  if (maps.empty()) {
    s->session = unlocked(*e, [&] { return e->engine->open(rgb, name); });
    return s;
  }
  Attention att;
  for (py::handle item : maps) {
    auto t = item.cast<py::tuple>();  // (label, float32 array, fp16, weight), made by __init__.py
    att.maps.push_back(map_from_array(t[0].cast<std::string>(), t[1].cast<py::array_t<float, py::array::c_style>>(),
                                      t[2].cast<bool>(), t[3].cast<float>()));
  }
  att.meta["source"] = "python";
  s->session = unlocked(*e, [&] {
    try {
      return e->engine->open(rgb, std::move(att), name);
    } catch (const MemoryError&) {
      throw;
    } catch (const Error& err) {
      throw ValueFailure(err.what());
    }
  });
  return s;
}

}  // namespace

PYBIND11_MODULE(_m2n2, m) {
  m.doc() = "m2n2's Engine and Session (see the m2n2 package for the documented API)";

  static py::exception<MemoryError> memory_error(m, "MemoryLimitError", PyExc_RuntimeError);
  // Local: pybind11's translators are shared by every module of the same pybind11 ABI
  // (PyTorch's too), and PyTorch's own exceptions must keep their meaning.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const py::error_already_set&) {
      throw;
    } catch (const py::builtin_exception&) {
      throw;
    } catch (const MemoryError& e) {
      memory_error(one_line_message(e).c_str());
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, one_line_message(e).c_str());
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, one_line_message(e).c_str());
    }
  });

  py::class_<PyEngine, std::shared_ptr<PyEngine>>(m, "Engine")
      .def(py::init(&make_engine), py::arg("source") = py::none(), py::arg("device") = "cpu", py::arg("threads") = 0,
           py::arg("cache_dir") = py::none(), py::arg("grid") = 0, py::arg("max_memory_bytes") = 0.0,
           py::arg("progress") = py::none(), py::arg("warn") = py::none())
      .def("_open", &open_session, py::arg("image"), py::arg("maps"), py::arg("name") = "")
      .def_property_readonly("source_id", [](PyEngine& e) { return e.engine->source_id(); })
      .def_property_readonly("device", [](PyEngine& e) { return to_string(e.engine->options().device); });

  py::class_<PySession>(m, "Session")
      .def("prepare", [](PySession& s) { unlocked(*s.engine, [&] { s.session->prepare(); }); })
      .def_property_readonly("prepared", [](PySession& s) { return s.session->prepared(); })
      .def_property_readonly("size", [](PySession& s) { return py::make_tuple(s.session->size().width, s.session->size().height); })
      .def_property_readonly("name", [](PySession& s) { return s.session->name(); })
      .def("expect_points", [](PySession& s, int n) { unlocked(*s.engine, [&] { s.session->expect_points(n); }); })
      .def("_segment", [](PySession& s, py::object clicks) {
             const std::vector<Click> c = clicks_from(clicks, s.session->size());
             auto r = unlocked(*s.engine, [&] { return s.session->segment(c); });
             py::list choices;
             for (const auto& ch : r.choices) {
               py::dict d;
               d["index"] = ch.index;
               d["threshold"] = ch.threshold;
               d["score"] = ch.score;
               choices.append(d);
             }
             return py::make_tuple(bool_array(r.mask), copy_array<float>(r.soft), choices);
           }, py::arg("clicks"))
      .def("markov_map", [](PySession& s, double x, double y) {
             check_point_inside(x, y, s.session->size());
             cv::Mat r = unlocked(*s.engine, [&] { return s.session->markov_map(click_pixel(Click{x, y, true})); });
             return copy_array<float>(r);
           }, py::arg("x"), py::arg("y"))
      .def("distance_map", [](PySession& s, double x, double y) {
             check_point_inside(x, y, s.session->size());
             cv::Mat r = unlocked(*s.engine, [&] { return s.session->distance_map(click_pixel(Click{x, y, true})); });
             return copy_array<float>(r);
           }, py::arg("x"), py::arg("y"))
      .def("diffseg", [](PySession& s, py::kwargs kw) {
             const DiffSegParams p = diffseg_params(kw);
             return labels_result(unlocked(*s.engine, [&] { return s.session->diffseg(p); }));
           })
      .def("ncut", [](PySession& s, py::kwargs kw) {
             const NcutParams p = ncut_params(kw);
             return labels_result(unlocked(*s.engine, [&] { return s.session->ncut(p); }));
           })
      .def_property_readonly("timings", [](PySession& s) {
             const SessionTimings t = s.session->timings();
             py::dict d;
             d["attention"] = t.attention;
             d["operator"] = t.op;
             d["table"] = t.table;
             d["total"] = t.total();
             return d;
           })
      .def_property_readonly("memory_bytes", [](PySession& s) { return static_cast<int64_t>(s.session->memory_bytes()); })
      .def_property_readonly("cached_points", [](PySession& s) { return s.session->cached_points(); })
      .def("clear_points", [](PySession& s) { unlocked(*s.engine, [&] { s.session->clear_points(); }); });
}
