// sink.h — counts what arrives on an interface with pg_sink attached (XDP, drop or pass), and
// optionally captures the first bytes of each frame into a pcap file and histograms the one-way
// latency of frames pktgen stamped.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "bpf_result.h"
#include "netdev.h"

struct mp_pktgen;
struct bpf_link;
struct ring_buffer;

namespace meshpath::pktgen {

struct SinkOptions {
  std::string ifname;
  std::string netns;  // attach in this namespace (the caller's is kept)
  bool pass = false;  // XDP_PASS instead of XDP_DROP
  std::string pcapPath;
  uint32_t snap = 128;  // bytes captured per frame when pcapPath is set
  bool latency = false;
};

struct SinkCounts {
  uint64_t packets = 0;
  uint64_t bytes = 0;
  uint64_t firstNs = 0;  // CLOCK_MONOTONIC of the first and last frame (0: none yet)
  uint64_t lastNs = 0;
  uint64_t stamped = 0;
  uint64_t captureDrops = 0;  // frames the capture ring had no room for
};

struct LatencySummary {
  uint64_t samples = 0;
  double p50Ns = 0, p90Ns = 0, p99Ns = 0, p999Ns = 0, maxNs = 0;
};

class Sink {
 public:
  static BpfResult<std::unique_ptr<Sink>> attach(const SinkOptions& options);
  ~Sink();  // detaches, flushes the capture

  SinkCounts counts() const;
  LatencySummary latency() const;
  uint64_t captured() const { return captured_.load(); }
  const Netdev& netdev() const { return dev_; }
  // Stops capturing and writes out what the ring holds.
  void finishCapture();

 private:
  explicit Sink(SinkOptions options) : options_(std::move(options)) {}
  static int onRecord(void* ctx, void* data, size_t size);

  SinkOptions options_;
  Netdev dev_;
  mp_pktgen* skel_ = nullptr;
  bpf_link* link_ = nullptr;
  ring_buffer* ring_ = nullptr;
  std::FILE* pcap_ = nullptr;
  std::thread poller_;
  std::atomic<bool> stopPolling_{false};
  std::atomic<uint64_t> captured_{0};
};

}  // namespace meshpath::pktgen
