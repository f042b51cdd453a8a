// m2n2 — compute device and thread settings. The only place where device and
// dtype choices are made (see src/core/torch_device.hpp for the LibTorch side).
#pragma once
#include <string>

namespace m2n2 {

enum class Device { Auto, Cpu, Cuda };
// Storage precision of the Markov operator. fp16 on the CPU stores the operator after
// one Sinkhorn iteration, scaled by a power of two, and balances it in fp16
// (markov_operator.cpp); on CUDA, K as is. bf16 is for CUDA only: on the CPU it stays
// fp32.
enum class Precision { Float32, Float16, BFloat16 };

Device parse_device(const std::string& s);        // "auto" | "cpu" | "cuda"
Precision parse_precision(const std::string& s);  // "fp32" | "fp16" | "bf16"
std::string to_string(Device d);
std::string to_string(Precision p);

// A CUDA device LibTorch can use. False without loading anything where the LibTorch
// backend was built against a CPU-only LibTorch; otherwise the backend is loaded to ask.
bool cuda_available();
// Auto -> Cuda when available, else Cpu. Asking for Cuda without one throws Error.
Device resolve(Device d);

// Free memory of the device that `d` resolves to: the GPU's (cudaMemGetInfo of the
// CUDA runtime LibTorch loaded) or the host's (MemAvailable); 0 when unknown.
double device_free_bytes(Device d);

// Sets the threads used by m2n2's own OpenMP loops and by LibTorch, now or when it is
// loaded (one pool size for both so that they never oversubscribe the cores). It holds
// for loops started from any thread (OpenMP's own setting is per thread).
// 0 = number of cores.
void set_num_threads(int n);
int num_threads();

}  // namespace m2n2
