// bench_maglev — time to build a Maglev ring of M = 65537 slots for 100 and 1000 endpoints
// (target: well under 1 ms for 1000), equal and mixed weights. Times are printed in ms.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "maglev.h"

namespace {

std::vector<meshpath::MaglevEndpoint> makeEndpoints(uint32_t n, bool mixed_weights) {
  std::vector<meshpath::MaglevEndpoint> eps;
  eps.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const std::string address =
        "10." + std::to_string(2 + i / 65536) + "." + std::to_string(i / 256 % 256) + "." +
        std::to_string(i % 256);
    // Mixed: weights 1..100 in a fixed pattern, as a canary-and-drain deployment might use.
    const uint32_t weight = mixed_weights ? 1 + (i * 37) % 100 : 1;
    eps.push_back({i, address + ":8080", weight});
  }
  return eps;
}

void BM_BuildRing(benchmark::State& state) {
  const auto eps = makeEndpoints(static_cast<uint32_t>(state.range(0)), state.range(1) != 0);
  const auto m = static_cast<uint32_t>(state.range(2));
  for (auto _ : state) {
    auto ring = meshpath::buildMaglevRing(eps, m);
    benchmark::DoNotOptimize(ring.data());
    benchmark::ClobberMemory();
  }
  state.counters["slots"] = m;
}

}  // namespace

BENCHMARK(BM_BuildRing)
    ->ArgNames({"endpoints", "weighted", "M"})
    ->Args({100, 0, 65537})
    ->Args({1000, 0, 65537})
    ->Args({100, 1, 65537})
    ->Args({1000, 1, 65537})
    ->Args({1000, 0, 655373})
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
