#include "map_layout.h"

#include <bpf/bpf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "abi.h"

namespace meshpath {
namespace {

// ---- the layouts before the current ones ------------------------------------------------------

// mp_conn before the SYN proxy (0d34485): 24 bytes, what is now proxy_opts/retries/ep_wscale was
// padding, seq_off and ts_off did not exist.
struct mp_conn_v1 {
  uint32_t ep_id;
  uint16_t snat_port;
  uint16_t flags;
  uint64_t expires;
  uint32_t syn_ns;
  uint8_t snat_addr;
  uint8_t pad[3];
};
static_assert(sizeof(mp_conn_v1) == 24);

// mp_node_cfg before the SYN proxy: the same fields up to n_dnat; syn_flood_threshold and the
// two MSS were appended (0 in each means its default).
constexpr size_t kNodeCfgV1Size = 264;
static_assert(offsetof(mp_node_cfg, syn_flood_threshold) == kNodeCfgV1Size);

// mp_exc before the SYN proxy counted 21 reasons; the new ones were appended.
constexpr uint32_t kExcMaxV1 = 21;

// MP_MAX_SERVICES until a node held 65,536 services: every map indexed or keyed by service had
// 1,024 entries. A literal, not the macro: version 1 describes pins that exist on nodes.
constexpr uint32_t kMaxServicesV1 = 1024;

void convertConnV1(std::span<const uint8_t> oldKey, std::span<const uint8_t> oldValue,
                   std::span<uint8_t> newKey, std::span<uint8_t> newValue) {
  std::memcpy(newKey.data(), oldKey.data(), oldKey.size());
  mp_conn_v1 v1{};
  std::memcpy(&v1, oldValue.data(), sizeof(v1));
  mp_conn c{};  // the SYN proxy's fields: 0, as for every connection it did not open
  c.ep_id = v1.ep_id;
  c.snat_port = v1.snat_port;
  c.flags = v1.flags;
  c.expires = v1.expires;
  c.syn_ns = v1.syn_ns;
  c.snat_addr = v1.snat_addr;
  std::memcpy(newValue.data(), &c, sizeof(c));
}

// The value's bytes kept, the rest zero: for values that only grew at their end.
void convertAppended(std::span<const uint8_t> oldKey, std::span<const uint8_t> oldValue,
                     std::span<uint8_t> newKey, std::span<uint8_t> newValue) {
  std::memcpy(newKey.data(), oldKey.data(), std::min(oldKey.size(), newKey.size()));
  std::memcpy(newValue.data(), oldValue.data(), std::min(oldValue.size(), newValue.size()));
}

constexpr uint32_t kHash = BPF_MAP_TYPE_HASH, kLru = BPF_MAP_TYPE_LRU_HASH,
                   kArray = BPF_MAP_TYPE_ARRAY, kPercpu = BPF_MAP_TYPE_PERCPU_ARRAY,
                   kArrayOfMaps = BPF_MAP_TYPE_ARRAY_OF_MAPS;

struct History {
  std::string_view map;
  std::vector<MapLayout> layouts;
};

// Every pinned map, each version of its layout, oldest first. Change a map's key, value, type,
// flags or fixed size: append a version here (and a migration below), never edit one.
const std::vector<History>& histories() {
  static const std::vector<History> kHistories = {
      {"mp_services",
       {{1, kHash, sizeof(mp_svc_key), sizeof(mp_svc), 0, kMaxServicesV1},
        {2, kHash, sizeof(mp_svc_key), sizeof(mp_svc), 0, MP_MAX_SERVICES}}},
      {"mp_endpoints", {{1, kArray, 4, sizeof(mp_endpoint), 0, MP_MAX_ENDPOINTS}}},
      {"mp_rings",
       {{1, kArrayOfMaps, 4, 4, 0, kMaxServicesV1}, {2, kArrayOfMaps, 4, 4, 0, MP_MAX_SERVICES}}},
      {"mp_conns",
       {{1, kHash, sizeof(mp_flow), sizeof(mp_conn_v1), 0, 0},
        {2, kHash, sizeof(mp_flow), sizeof(mp_conn), 0, 0}}},
      {"mp_rnat", {{1, kHash, sizeof(mp_flow), sizeof(mp_rnat), 0, 0}}},
      {"mp_half",
       {{1, kLru, sizeof(mp_flow), sizeof(mp_conn_v1), 0, 0},
        {2, kLru, sizeof(mp_flow), sizeof(mp_conn), 0, 0}}},
      {"mp_hrnat", {{1, kLru, sizeof(mp_flow), sizeof(mp_rnat), 0, 0}}},
      {"mp_svc_tmo",
       {{1, kArray, 4, sizeof(mp_svc_tmo), 0, kMaxServicesV1},
        {2, kArray, 4, sizeof(mp_svc_tmo), 0, MP_MAX_SERVICES}}},
      {"mp_ep_vip", {{1, kHash, sizeof(mp_ep_key), sizeof(mp_ep_vip), 0, MP_MAX_ENDPOINTS}}},
      {"mp_node",
       {{1, kArray, 4, kNodeCfgV1Size, 0, 1}, {2, kArray, 4, sizeof(mp_node_cfg), 0, 1}}},
      {"mp_svc_stats",
       {{1, kPercpu, 4, sizeof(mp_counters), 0, kMaxServicesV1},
        {2, kPercpu, 4, sizeof(mp_counters), 0, MP_MAX_SERVICES}}},
      {"mp_ep_stats", {{1, kPercpu, 4, sizeof(mp_counters), 0, MP_MAX_ENDPOINTS}}},
      {"mp_ep_health", {{1, kArray, 4, sizeof(mp_ep_health), BPF_F_MMAPABLE, MP_MAX_ENDPOINTS}}},
      {"mp_events", {{1, BPF_MAP_TYPE_RINGBUF, 0, 0, 0, MP_EVENTS_BYTES}}},
      {"mp_rr", {{1, kPercpu, 4, 4, 0, kMaxServicesV1}, {2, kPercpu, 4, 4, 0, MP_MAX_SERVICES}}},
      {"mp_exc", {{1, kPercpu, 4, 8, 0, kExcMaxV1}, {2, kPercpu, 4, 8, 0, MP_EXC_MAX}}},
      {"mp_fwd_gen", {{1, kArray, 4, sizeof(mp_fwd_gen), BPF_F_MMAPABLE, 1}}},
      {"mp_syn_secret", {{1, kArray, 4, sizeof(mp_syn_secret), 0, 1}}},
      {"mp_syn_guard",
       {{1, kArray, 4, sizeof(mp_syn_guard), BPF_F_MMAPABLE, kMaxServicesV1},
        {2, kArray, 4, sizeof(mp_syn_guard), BPF_F_MMAPABLE, MP_MAX_SERVICES}}},
      {"mp_syn_stats",
       {{1, kPercpu, 4, sizeof(mp_syn_counters), 0, kMaxServicesV1},
        {2, kPercpu, 4, sizeof(mp_syn_counters), 0, MP_MAX_SERVICES}}},
  };
  return kHistories;
}

const std::array<LayoutMigration, 11> kMigrations = {{
    {"mp_conns", 1, 2, convertConnV1},
    {"mp_half", 1, 2, convertConnV1},
    {"mp_node", 1, 2, convertAppended},
    {"mp_exc", 1, 2, convertAppended},  // more reasons: the counters of the old ones kept
    // 1,024 -> 65,536 services: each entry as it was, arrays at the same index; mp_rings' entries
    // are its rings themselves (MapMigration installs each inner map in the new outer one).
    {"mp_services", 1, 2, convertAppended},
    {"mp_rings", 1, 2, convertAppended},
    {"mp_svc_tmo", 1, 2, convertAppended},
    {"mp_svc_stats", 1, 2, convertAppended},
    {"mp_rr", 1, 2, convertAppended},
    {"mp_syn_guard", 1, 2, convertAppended},
    {"mp_syn_stats", 1, 2, convertAppended},
}};

uint64_t fnv1a(uint64_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

bool isPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

// Keyed by index: an entry keeps its index in the new map.
bool isArray(uint32_t type) {
  return type == BPF_MAP_TYPE_ARRAY || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_ARRAY_OF_MAPS;
}

// Maps whose values are other maps: userspace reads an inner map's id and writes its fd.
bool isMapOfMaps(uint32_t type) {
  return type == BPF_MAP_TYPE_ARRAY_OF_MAPS || type == BPF_MAP_TYPE_HASH_OF_MAPS;
}

// The inner-map template a new map of maps is created with: a map of the compiled inner map's
// shape, which the kernel copies (every inner map written later must match it, in max_entries
// too unless it has BPF_F_INNER_MAP) and which can be closed once the outer map exists. The
// compiled shape exactly, as libbpf creates it at load: the program was verified against it.
BpfResult<UniqueFd> innerTemplate(const std::string& outer, bpf_map* compiled) {
  const bpf_map* inner = bpf_map__inner_map(compiled);
  if (inner == nullptr) return bpfError(EINVAL, outer + " is compiled without an inner map");
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = bpf_map__map_flags(inner));
  const int fd = bpf_map_create(bpf_map__type(inner), "mp_inner_tmpl", bpf_map__key_size(inner),
                                bpf_map__value_size(inner), bpf_map__max_entries(inner), &opts);
  if (fd < 0) return bpfError(errno, "create the inner-map template of the new " + outer);
  return UniqueFd(fd);
}

// Writes inner maps into a map of maps, kBatch at a time. Every update of a map of maps waits for
// an RCU grace period (the kernel makes sure no program still reads the inner map it replaced),
// once per syscall: 14-16 ms each on this 2-core machine, so 1,024 rings written one by one took
// 15 s, in one batch 6 ms. Each inner map is held open until its batch is written: kBatch keeps
// that far below the default limit of 1,024 open files.
class InnerMapWriter {
 public:
  static constexpr size_t kBatch = 256;

  InnerMapWriter(int outerFd, size_t keySize) : outerFd_(outerFd), keySize_(keySize) {}

  // Takes innerFd; writes the batch when it is full.
  BpfStatus add(std::span<const uint8_t> key, UniqueFd innerFd) {
    keys_.insert(keys_.end(), key.begin(), key.end());
    fds_.push_back(innerFd.get());
    open_.push_back(std::move(innerFd));
    return fds_.size() < kBatch ? bpfOk() : flush();
  }

  BpfStatus flush() {
    if (fds_.empty()) return bpfOk();
    uint32_t count = static_cast<uint32_t>(fds_.size());
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    if (bpf_map_update_batch(outerFd_, keys_.data(), fds_.data(), &count, &opts) != 0) {
      // A kernel without batch updates of maps of maps (or an entry it refuses, named below):
      // the batch again, one entry at a time.
      for (size_t i = 0; i < fds_.size(); ++i) {
        if (bpf_map_update_elem(outerFd_, keys_.data() + i * keySize_, &fds_[i], BPF_ANY) != 0) {
          return bpfError(errno, "install inner map " + std::to_string(i) + " of a batch of " +
                                     std::to_string(fds_.size()));
        }
      }
    }
    keys_.clear();
    fds_.clear();
    open_.clear();
    return bpfOk();
  }

 private:
  int outerFd_;
  size_t keySize_;
  std::vector<uint8_t> keys_;
  std::vector<int> fds_;
  std::vector<UniqueFd> open_;
};

uint64_t nowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

const std::vector<MapLayout>* layoutHistory(std::string_view map) {
  for (const History& h : histories()) {
    if (h.map == map) return &h.layouts;
  }
  return nullptr;
}

const LayoutMigration* findMigration(std::string_view map, uint32_t from, uint32_t to) {
  for (const LayoutMigration& m : kMigrations) {
    if (m.map == map && m.from == from && m.to == to) return &m;
  }
  return nullptr;
}

std::vector<std::string_view> versionedMaps() {
  std::vector<std::string_view> out;
  for (const History& h : histories()) out.push_back(h.map);
  return out;
}

// ---- the version record -----------------------------------------------------------------------

namespace {
struct RecordKey {
  char name[16] = {};
};
RecordKey recordKey(std::string_view map) {
  RecordKey k;
  std::memcpy(k.name, map.data(), std::min(map.size(), sizeof(k.name) - 1));
  return k;
}
}  // namespace

BpfResult<LayoutRecord> LayoutRecord::open(const std::string& pinRoot, bool create) {
  const std::string path = pinRoot + "/" + kLayoutRecordMap;
  LayoutRecord record;
  int fd = bpf_obj_get(path.c_str());
  if (fd >= 0) {
    record.fd_.reset(fd);
    return record;
  }
  if (errno != ENOENT || !create) {
    if (errno == ENOENT) return record;  // none yet: every version reads as 0
    return bpfError(errno, "open the layout record " + path);
  }
  fd = bpf_map_create(BPF_MAP_TYPE_HASH, kLayoutRecordMap, sizeof(RecordKey), sizeof(uint32_t), 128,
                      nullptr);
  if (fd < 0) return bpfError(errno, "create the layout record");
  record.fd_.reset(fd);
  if (bpf_obj_pin(fd, path.c_str()) != 0)
    return bpfError(errno, "pin the layout record at " + path);
  return record;
}

uint32_t LayoutRecord::version(std::string_view map) const {
  if (!fd_.valid()) return 0;
  const RecordKey key = recordKey(map);
  uint32_t version = 0;
  return bpf_map_lookup_elem(fd_.get(), &key, &version) == 0 ? version : 0;
}

BpfStatus LayoutRecord::set(std::string_view map, uint32_t version) {
  const RecordKey key = recordKey(map);
  if (bpf_map_update_elem(fd_.get(), &key, &version, BPF_ANY) != 0) {
    return bpfError(errno,
                    "record layout version " + std::to_string(version) + " of " + std::string(map));
  }
  return bpfOk();
}

BpfResult<MapLayout> pinnedLayout(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return bpfError(errno, "read map info");
  return MapLayout{.version = 0,
                   .type = info.type,
                   .keySize = info.key_size,
                   .valueSize = info.value_size,
                   .flags = info.map_flags,
                   .maxEntries = info.max_entries};
}

// ---- one migration ----------------------------------------------------------------------------

BpfResult<MapMigration> MapMigration::start(std::string name, const LayoutMigration& migration,
                                            UniqueFd oldFd, bpf_map* compiled) {
  MapMigration m;
  m.name_ = std::move(name);
  m.from_ = migration.from;
  m.to_ = migration.to;
  m.convert_ = migration.convert;
  auto old = pinnedLayout(oldFd.get());
  if (!old) return old.error();
  m.oldLayout_ = *old;
  m.oldFd_ = std::move(oldFd);
  m.newLayout_ = MapLayout{.version = migration.to,
                           .type = bpf_map__type(compiled),
                           .keySize = bpf_map__key_size(compiled),
                           .valueSize = bpf_map__value_size(compiled),
                           .flags = bpf_map__map_flags(compiled),
                           .maxEntries = bpf_map__max_entries(compiled)};
  if (m.newLayout_.type != m.oldLayout_.type &&
      (isPerCpu(m.newLayout_.type) || isPerCpu(m.oldLayout_.type))) {
    return bpfError(EINVAL, "migrate " + m.name_ + ": between per-CPU and shared kinds");
  }
  if (isMapOfMaps(m.newLayout_.type) != isMapOfMaps(m.oldLayout_.type)) {
    return bpfError(EINVAL, "migrate " + m.name_ + ": between a map of maps and another kind");
  }
  for (uint32_t type : {m.oldLayout_.type, m.newLayout_.type}) {
    if (type == BPF_MAP_TYPE_RINGBUF || type == BPF_MAP_TYPE_USER_RINGBUF) {
      return bpfError(EINVAL, "migrate " + m.name_ + ": a ring buffer has no entries to copy");
    }
  }
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = m.newLayout_.flags);
  UniqueFd inner;
  if (isMapOfMaps(m.newLayout_.type)) {
    auto t = innerTemplate(m.name_, compiled);
    if (!t) return t.error();
    inner = std::move(*t);
    opts.inner_map_fd = static_cast<uint32_t>(inner.get());
  }
  const int fd =
      bpf_map_create(static_cast<bpf_map_type>(m.newLayout_.type), m.name_.c_str(),
                     m.newLayout_.keySize, m.newLayout_.valueSize, m.newLayout_.maxEntries, &opts);
  if (fd < 0)
    return bpfError(errno, "create the new " + m.name_ + " (layout " + std::to_string(m.to_) + ")");
  m.newFd_.reset(fd);
  const uint64_t t0 = nowNs();
  auto copied = m.copy(false);
  if (!copied) return copied.error();
  m.stats_.copied = *copied;
  m.stats_.copyNs = nowNs() - t0;
  return m;
}

// Walks the old map (get_next_key; an array's keys are its indices) and writes each entry,
// converted, into the new one. delta: only entries whose (key, value) the first walk did not see.
// A map of maps reads as inner map ids: each converted id is opened and its fd written, so the
// new map holds the very inner maps the old one does (the program sees the same rings).
BpfResult<uint64_t> MapMigration::copy(bool delta) {
  const bool perCpu = isPerCpu(oldLayout_.type);
  int ncpu = 1;
  if (perCpu) {
    ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return bpfError(-ncpu, "count possible CPUs");
  }
  const size_t oldStride = perCpu ? (oldLayout_.valueSize + 7) / 8 * 8 : oldLayout_.valueSize;
  const size_t newStride = perCpu ? (newLayout_.valueSize + 7) / 8 * 8 : newLayout_.valueSize;
  std::vector<uint8_t> key(oldLayout_.keySize), next(oldLayout_.keySize);
  std::vector<uint8_t> oldValue(oldStride * static_cast<size_t>(ncpu));
  std::vector<uint8_t> newKey(newLayout_.keySize);
  std::vector<uint8_t> newValue(newStride * static_cast<size_t>(ncpu));
  const bool arrays = isArray(oldLayout_.type) && isArray(newLayout_.type);
  const bool mapOfMaps = isMapOfMaps(newLayout_.type);
  InnerMapWriter inner(newFd_.get(), newLayout_.keySize);
  uint64_t written = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(oldFd_.get(), prev, next.data()) == 0) {
    key = next;
    prev = key.data();
    if (bpf_map_lookup_elem(oldFd_.get(), key.data(), oldValue.data()) != 0) {
      if (errno == ENOENT) continue;  // deleted meanwhile, or an empty slot of a map of maps
      return bpfError(errno, "read an entry of the old " + name_);
    }
    const uint64_t h = fnv1a(fnv1a(0xcbf29ce484222325ull, key.data(), key.size()), oldValue.data(),
                             oldValue.size());
    if (delta) {
      if (seen_.contains(h)) continue;
    } else {
      seen_.insert(h);
    }
    if (arrays) {
      uint32_t index = 0;
      std::memcpy(&index, key.data(), sizeof(index));
      if (index >= newLayout_.maxEntries) continue;  // an array that shrank: its tail goes
    }
    std::fill(newKey.begin(), newKey.end(), 0);
    std::fill(newValue.begin(), newValue.end(), 0);
    for (int cpu = 0; cpu < ncpu; ++cpu) {
      convert_(key,
               std::span<const uint8_t>(oldValue).subspan(cpu * oldStride, oldLayout_.valueSize),
               newKey, std::span<uint8_t>(newValue).subspan(cpu * newStride, newLayout_.valueSize));
    }
    if (mapOfMaps) {
      uint32_t innerId = 0;
      std::memcpy(&innerId, newValue.data(), sizeof(innerId));
      const int fd = bpf_map_get_fd_by_id(innerId);
      if (fd < 0) {
        if (errno == ENOENT) continue;  // freed meanwhile: the old map no longer holds it
        return bpfError(errno,
                        "open inner map id " + std::to_string(innerId) + " of the old " + name_);
      }
      if (auto st = inner.add(newKey, UniqueFd(fd)); !st) {
        return bpfError(st.error().errnum,
                        "write into the new " + name_ + ": " + st.error().context);
      }
    } else if (bpf_map_update_elem(newFd_.get(), newKey.data(), newValue.data(), BPF_ANY) != 0) {
      return bpfError(errno, "write a converted entry into the new " + name_ + " (" +
                                 std::to_string(written) + " written)");
    }
    ++written;
  }
  if (auto st = inner.flush(); !st) {
    return bpfError(st.error().errnum, "write into the new " + name_ + ": " + st.error().context);
  }
  return written;
}

BpfStatus MapMigration::finish(const std::string& pinPath) {
  const uint64_t t0 = nowNs();
  auto changed = copy(true);
  if (!changed) return changed.error();
  stats_.changed = *changed;
  stats_.deltaNs = nowNs() - t0;
  // Pinned beside the old one, then renamed over it: the path never lacks a map.
  const std::string staging = pinPath + "_migrating";  // bpffs takes no dot in a name
  ::unlink(staging.c_str());
  if (bpf_obj_pin(newFd_.get(), staging.c_str()) != 0) {
    return bpfError(errno, "pin the migrated " + name_ + " at " + staging);
  }
  if (::rename(staging.c_str(), pinPath.c_str()) != 0) {
    const int err = errno;
    ::unlink(staging.c_str());
    return bpfError(err, "rename " + staging + " to " + pinPath);
  }
  seen_.clear();
  return bpfOk();
}

}  // namespace meshpath
