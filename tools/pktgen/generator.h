// generator.h — sends what a TrafficSpec describes out of one interface, from several threads:
// BPF_PROG_RUN with live frames (the XDP program writes every frame, pg_gen) or, where the kernel
// lacks live frames, AF_PACKET with PACKET_QDISC_BYPASS (the same frame writer in userspace).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bpf_result.h"
#include "traffic.h"
#include "unique_fd.h"

struct mp_pktgen;
struct bpf_link;

namespace meshpath::pktgen {

enum class Backend { kAuto, kLiveFrames, kAfPacket };
const char* backendName(Backend backend);

struct GeneratorOptions {
  TrafficSpec spec;
  int ifindex = 0;
  uint64_t count = 0;     // 0: until stopped (duration or signal)
  double ratePps = 0;     // 0: as fast as possible
  std::vector<int> cpus;  // one thread per entry, pinned; -1: not pinned
  uint32_t batch = 64;    // live frames: frames per kernel batch (1..256)
  Backend backend = Backend::kAuto;
};

class Generator {
 public:
  // Loads pg_gen (live frames) or opens the AF_PACKET socket.
  static BpfResult<std::unique_ptr<Generator>> create(const GeneratorOptions& options);
  ~Generator();

  // Sends options.count packets (or until stop()), from options.cpus.size() threads, and returns
  // when all threads have finished. With Backend::kAuto, the first refusal of live frames by the
  // kernel switches to AF_PACKET (fellBack() then says so).
  BpfStatus run();
  void stop() { stop_.store(true); }

  uint64_t sent() const { return sent_.load(std::memory_order_relaxed); }
  Backend backend() const { return backend_; }
  bool fellBack() const { return fellBack_; }
  const std::string& fallbackReason() const { return fallbackError_; }  // the kernel's refusal

 private:
  explicit Generator(GeneratorOptions options) : options_(std::move(options)) {}
  BpfStatus liveLoop(size_t index, uint64_t quota, bool& refused);
  BpfStatus afPacketLoop(size_t index, uint64_t quota);
  BpfStatus pinDispatcher();
  void pace(uint64_t sentByThread, double threadRate, uint64_t startNs);

  GeneratorOptions options_;
  Backend backend_ = Backend::kLiveFrames;
  bool fellBack_ = false;
  std::string fallbackError_;
  mp_pktgen* skel_ = nullptr;
  bpf_link* dispatcherLink_ = nullptr;
  UniqueFd nsFd_;
  std::vector<uint8_t> frame_;
  pg_config cfg_{};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> nextSeq_{0};  // AF_PACKET: packet numbers handed out in blocks
};

uint64_t monotonicNs();

}  // namespace meshpath::pktgen
