#include "generator.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "pktgen_skel.h"
#include "unique_fd.h"

namespace meshpath::pktgen {

namespace {
constexpr uint64_t kChunk = 1 << 16;  // packets per BPF_PROG_RUN call when not rate-limited
constexpr size_t kAfPacketBurst = 64;
constexpr int kEnotsupp = 524;  // the kernel's ENOTSUPP, not in userspace headers
}  // namespace

uint64_t monotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

const char* backendName(Backend backend) {
  switch (backend) {
    case Backend::kAuto:
      return "auto";
    case Backend::kLiveFrames:
      return "live-frames";
    case Backend::kAfPacket:
      return "af-packet";
  }
  return "?";
}

BpfResult<std::unique_ptr<Generator>> Generator::create(const GeneratorOptions& options) {
  std::unique_ptr<Generator> gen(new Generator(options));
  gen->frame_ = initialFrame(options.spec);
  gen->cfg_ = makeConfig(options.spec);
  if (options.cpus.empty()) gen->options_.cpus = {-1};
  if (options.backend == Backend::kAfPacket) {
    gen->backend_ = Backend::kAfPacket;
    return gen;
  }
  mp_pktgen* skel = mp_pktgen__open();
  if (skel == nullptr) return bpfError(errno, "open the pktgen BPF object");
  gen->skel_ = skel;
  bpf_program__set_autoload(skel->progs.pg_sink, false);
  bpf_program__set_autoload(skel->progs.pg_fwd, false);
  bpf_map__set_max_entries(skel->maps.pg_capture, 4096);
  skel->bss->pg_cfg = gen->cfg_;
  if (int err = mp_pktgen__load(skel); err != 0) {
    return bpfError(err, "load the pktgen generator program (pg_gen)");
  }
  if (auto st = gen->pinDispatcher(); !st.ok()) return st.error();
  return gen;
}

// BPF_PROG_RUN with repeat > 1 swaps the program into the kernel's XDP dispatcher and out again
// around every call, and that costs ~25 ms here (text patching), whatever the repeat count. A
// program already attached somewhere stays in the dispatcher, and the swap becomes a reference
// count. So pg_gen is attached to the loopback device of a network namespace of its own, which
// no packet ever reaches (the namespace lives as long as nsFd_).
BpfStatus Generator::pinDispatcher() {
  UniqueFd original(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!original.valid()) return bpfError(errno, "open /proc/thread-self/ns/net");
  if (::unshare(CLONE_NEWNET) != 0) return bpfError(errno, "unshare(CLONE_NEWNET)");
  nsFd_.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  int loIndex = static_cast<int>(if_nametoindex("lo"));
  dispatcherLink_ = bpf_program__attach_xdp(skel_->progs.pg_gen, loIndex);
  int err = dispatcherLink_ == nullptr ? errno : 0;
  if (::setns(original.get(), CLONE_NEWNET) != 0) {
    return bpfError(errno, "return to the original network namespace");
  }
  // Not fatal: without it every call is slower, nothing else changes.
  if (err != 0)
    std::fprintf(stderr, "pktgen: note: could not keep pg_gen in the XDP dispatcher (%s)\n",
                 std::strerror(err));
  return bpfOk();
}

Generator::~Generator() {
  if (dispatcherLink_ != nullptr) bpf_link__destroy(dispatcherLink_);
  mp_pktgen__destroy(skel_);
}

void Generator::pace(uint64_t sentByThread, double threadRate, uint64_t startNs) {
  if (threadRate <= 0) return;
  uint64_t due =
      startNs + static_cast<uint64_t>(static_cast<double>(sentByThread) * 1e9 / threadRate);
  timespec ts{static_cast<time_t>(due / 1000000000ULL), static_cast<long>(due % 1000000000ULL)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

BpfStatus Generator::liveLoop(size_t index, uint64_t quota, bool& refused) {
  (void)index;
  refused = false;
  double threadRate = options_.ratePps / static_cast<double>(options_.cpus.size());
  uint64_t chunk = kChunk;
  if (threadRate > 0) {
    // About a thousand calls a second: smooth enough, and cheap.
    chunk = static_cast<uint64_t>(threadRate / 1000);
    if (chunk < 1) chunk = 1;
    if (chunk > kChunk) chunk = kChunk;
  }
  xdp_md ctx{};
  ctx.ingress_ifindex = static_cast<uint32_t>(options_.ifindex);
  ctx.data_end = static_cast<uint32_t>(frame_.size());  // the kernel insists it matches the data
  uint64_t done = 0;
  uint64_t start = monotonicNs();
  int progFd = bpf_program__fd(skel_->progs.pg_gen);
  while (!stop_.load(std::memory_order_relaxed) && (quota == 0 || done < quota)) {
    uint64_t n = chunk;
    if (quota != 0 && quota - done < n) n = quota - done;
    pace(done, threadRate, start);
    uint64_t callStart = monotonicNs();
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame_.data(),
                .data_size_in = static_cast<uint32_t>(frame_.size()), .ctx_in = &ctx,
                .ctx_size_in = sizeof(ctx), .repeat = static_cast<int>(n),
                .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = options_.batch);
    if (int err = bpf_prog_test_run_opts(progFd, &opts); err != 0) {
      int e = errno;
      if (done == 0 && sent() == 0 && (e == EINVAL || e == EOPNOTSUPP || e == kEnotsupp)) {
        refused = true;
      }
      return bpfError(e, "BPF_PROG_RUN with live frames (BPF_F_TEST_XDP_LIVE_FRAMES)");
    }
    done += n;
    sent_.fetch_add(n, std::memory_order_relaxed);
    if (threadRate <= 0) {
      // About 50 ms a call, so --duration and progress stay accurate at any packet rate.
      uint64_t tookNs = monotonicNs() - callStart;
      uint64_t next = tookNs == 0 ? kChunk : n * 50000000ULL / tookNs;
      chunk = std::clamp<uint64_t>(next, 256, kChunk);
    }
  }
  return bpfOk();
}

BpfStatus Generator::afPacketLoop(size_t index, uint64_t quota) {
  (void)index;
  UniqueFd sock(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return bpfError(errno, "AF_PACKET socket");
  int one = 1;
  if (::setsockopt(sock.get(), SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) != 0) {
    return bpfError(errno, "PACKET_QDISC_BYPASS");
  }
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_ifindex = options_.ifindex;
  addr.sll_protocol = 0;  // send only
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return bpfError(errno, "bind AF_PACKET socket");
  }
  double threadRate = options_.ratePps / static_cast<double>(options_.cpus.size());
  uint64_t burst = kAfPacketBurst;
  if (threadRate > 0 && threadRate / 1000 < burst) {
    burst = threadRate / 1000 < 1 ? 1 : static_cast<uint64_t>(threadRate / 1000);
  }
  std::vector<std::vector<uint8_t>> frames(burst, frame_);
  std::vector<iovec> iov(burst);
  std::vector<mmsghdr> msgs(burst);
  uint64_t done = 0;
  uint64_t start = monotonicNs();
  while (!stop_.load(std::memory_order_relaxed) && (quota == 0 || done < quota)) {
    uint64_t n = burst;
    if (quota != 0 && quota - done < n) n = quota - done;
    pace(done, threadRate, start);
    uint64_t seq = nextSeq_.fetch_add(n);
    uint64_t now = options_.spec.stamp ? monotonicNs() : 0;
    for (uint64_t i = 0; i < n; i++) {
      uint8_t* f = frames[i].data();
      pg_write_frame(f, f + frames[i].size(), &cfg_, seq + i, now);
      iov[i] = {f, frames[i].size()};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t off = 0;
    while (off < n) {
      int r = ::sendmmsg(sock.get(), msgs.data() + off, static_cast<unsigned>(n - off), 0);
      if (r < 0) {
        if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) {
          std::this_thread::yield();
          continue;
        }
        return bpfError(errno, "sendmmsg on AF_PACKET");
      }
      off += static_cast<uint64_t>(r);
    }
    done += n;
    sent_.fetch_add(n, std::memory_order_relaxed);
  }
  return bpfOk();
}

BpfStatus Generator::run() {
  size_t n = options_.cpus.size();
  std::vector<uint64_t> quotas(n, 0);
  if (options_.count != 0) {
    for (size_t i = 0; i < n; i++) quotas[i] = options_.count / n + (i < options_.count % n);
  }
  std::mutex mu;
  BpfStatus result = bpfOk();
  auto worker = [&](size_t i) {
    // Signals go to the main thread: a signal in a BPF_PROG_RUN call would end it with EINTR
    // and an unknown number of frames sent.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    if (options_.cpus[i] >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(options_.cpus[i], &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    BpfStatus st = bpfOk();
    if (backend_ == Backend::kLiveFrames) {
      bool refused = false;
      st = liveLoop(i, quotas[i], refused);
      if (!st.ok() && refused && options_.backend == Backend::kAuto) {
        std::lock_guard<std::mutex> lock(mu);
        if (!fellBack_) {
          fellBack_ = true;
          fallbackError_ = std::strerror(st.error().errnum);
        }
        st = afPacketLoop(i, quotas[i]);
      }
    } else {
      st = afPacketLoop(i, quotas[i]);
    }
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (result.ok()) result = st;
      stop();
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; i++) threads.emplace_back(worker, i);
  for (auto& t : threads) t.join();
  if (fellBack_) backend_ = Backend::kAfPacket;
  return result;
}

}  // namespace meshpath::pktgen
