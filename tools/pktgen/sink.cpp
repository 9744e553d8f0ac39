#include "sink.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "pktgen_skel.h"

extern "C" {
#include "pg_abi.h"
}

namespace meshpath::pktgen {

namespace {

// Classic pcap (microsecond timestamps from CLOCK_MONOTONIC: only differences mean anything).
void writePcapHeader(std::FILE* f, uint32_t snap) {
  struct {
    uint32_t magic = 0xa1b2c3d4;
    uint16_t major = 2, minor = 4;
    int32_t zone = 0;
    uint32_t sigfigs = 0;
    uint32_t snaplen;
    uint32_t linktype = 1;  // Ethernet
  } hdr;
  hdr.snaplen = snap;
  std::fwrite(&hdr, sizeof(hdr), 1, f);
}

}  // namespace

BpfResult<std::unique_ptr<Sink>> Sink::attach(const SinkOptions& options) {
  std::unique_ptr<Sink> sink(new Sink(options));
  if (options.snap == 0 || options.snap > PG_SNAP_MAX) {
    return bpfError(EINVAL, "--snap must be 1.." + std::to_string(PG_SNAP_MAX));
  }
  auto scope = NetnsScope::enter(options.netns);
  if (!scope) return scope.error();
  auto dev = findNetdev(options.ifname);
  if (!dev) {
    BpfError e = dev.error();
    if (!options.netns.empty()) e.context += " in network namespace '" + options.netns + "'";
    return e;
  }
  sink->dev_ = *dev;

  mp_pktgen* skel = mp_pktgen__open();
  if (skel == nullptr) return bpfError(errno, "open the pktgen BPF object");
  sink->skel_ = skel;
  bpf_program__set_autoload(skel->progs.pg_gen, false);
  bpf_program__set_autoload(skel->progs.pg_fwd, false);
  bool capture = !options.pcapPath.empty();
  if (!capture) bpf_map__set_max_entries(skel->maps.pg_capture, 4096);
  skel->bss->pg_sink_cfg.pass = options.pass ? 1 : 0;
  skel->bss->pg_sink_cfg.snap = capture ? options.snap : 0;
  skel->bss->pg_sink_cfg.latency = options.latency ? 1 : 0;
  if (int err = mp_pktgen__load(skel); err != 0) {
    return bpfError(err, "load the pktgen sink program (pg_sink)");
  }
  if (capture) {
    sink->pcap_ = std::fopen(options.pcapPath.c_str(), "wb");
    if (sink->pcap_ == nullptr) return bpfError(errno, "open " + options.pcapPath);
    writePcapHeader(sink->pcap_, options.snap);
    sink->ring_ =
        ring_buffer__new(bpf_map__fd(skel->maps.pg_capture), &Sink::onRecord, sink.get(), nullptr);
    if (sink->ring_ == nullptr) return bpfError(errno, "capture ring buffer");
  }
  sink->link_ = bpf_program__attach_xdp(skel->progs.pg_sink, dev->ifindex);
  if (sink->link_ == nullptr) {
    return bpfError(errno, "attach XDP to '" + options.ifname +
                               "' (another XDP program there? `ip link show " + options.ifname +
                               "`)");
  }
  if (capture) {
    Sink* raw = sink.get();
    sink->poller_ = std::thread([raw] {
      while (!raw->stopPolling_.load()) ring_buffer__poll(raw->ring_, 50);
    });
  }
  return sink;
}

int Sink::onRecord(void* ctx, void* data, size_t size) {
  auto* self = static_cast<Sink*>(ctx);
  if (size < sizeof(pg_capture_rec)) return 0;
  const auto* rec = static_cast<const pg_capture_rec*>(data);
  uint32_t rechdr[4] = {static_cast<uint32_t>(rec->ns / 1000000000ULL),
                        static_cast<uint32_t>(rec->ns % 1000000000ULL / 1000), rec->caplen,
                        rec->len};
  std::fwrite(rechdr, sizeof(rechdr), 1, self->pcap_);
  std::fwrite(rec->data, 1, rec->caplen, self->pcap_);
  self->captured_.fetch_add(1);
  return 0;
}

void Sink::finishCapture() {
  if (ring_ == nullptr) return;
  stopPolling_.store(true);
  if (poller_.joinable()) poller_.join();
  ring_buffer__consume(ring_);
  std::fflush(pcap_);
}

Sink::~Sink() {
  if (link_ != nullptr) bpf_link__destroy(link_);
  finishCapture();
  if (ring_ != nullptr) ring_buffer__free(ring_);
  if (pcap_ != nullptr) std::fclose(pcap_);
  mp_pktgen__destroy(skel_);
}

SinkCounts Sink::counts() const {
  SinkCounts total;
  int ncpu = libbpf_num_possible_cpus();
  std::vector<pg_counters> per(static_cast<size_t>(ncpu));
  uint32_t zero = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.pg_counts), &zero, per.data()) != 0) {
    return total;
  }
  for (const auto& c : per) {
    total.packets += c.packets;
    total.bytes += c.bytes;
    total.stamped += c.stamped;
    total.captureDrops += c.capture_drops;
    if (c.packets != 0 && (total.firstNs == 0 || c.first_ns < total.firstNs)) {
      total.firstNs = c.first_ns;
    }
    total.lastNs = std::max<uint64_t>(total.lastNs, c.last_ns);
  }
  return total;
}

LatencySummary Sink::latency() const {
  LatencySummary s;
  int ncpu = libbpf_num_possible_cpus();
  std::vector<uint64_t> hist(PG_LAT_BUCKETS, 0), per(static_cast<size_t>(ncpu));
  int fd = bpf_map__fd(skel_->maps.pg_lat);
  for (uint32_t b = 0; b < PG_LAT_BUCKETS; b++) {
    if (bpf_map_lookup_elem(fd, &b, per.data()) != 0) continue;
    for (uint64_t v : per) hist[b] += v;
    s.samples += hist[b];
  }
  if (s.samples == 0) return s;
  auto at = [&](double q) {
    uint64_t want = static_cast<uint64_t>(q * static_cast<double>(s.samples - 1)) + 1;
    uint64_t seen = 0;
    for (uint32_t b = 0; b < PG_LAT_BUCKETS; b++) {
      seen += hist[b];
      // The middle of the bucket.
      if (seen >= want)
        return static_cast<double>((uint64_t{b} << PG_LAT_SHIFT) + (1 << (PG_LAT_SHIFT - 1)));
    }
    return 0.0;
  };
  s.p50Ns = at(0.50);
  s.p90Ns = at(0.90);
  s.p99Ns = at(0.99);
  s.p999Ns = at(0.999);
  s.maxNs = at(1.0);
  return s;
}

}  // namespace meshpath::pktgen
