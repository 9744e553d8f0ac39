// map_layout.h — versioned layouts of the pinned maps and their migrations.
//
// Every map pinned under a pin root has a layout version (kind, key and value size, flags,
// max_entries when fixed); the versions in use are recorded in the pin root's own map mp_layout
// ({map name -> version}, pinned beside the maps, written by meshd only). When a pinned map's
// version differs from the one this build was compiled with, a registered migration (from ->
// to, per map) converts it into a new map; with none, the load is refused with the map, the
// versions and what to do (docs/operations.md, "How to change a map's layout"). A map is never
// recreated empty behind the operator's back.
//
// A migration runs in three steps around the program switch, so connections opened meanwhile
// are kept (MapMigration): copy every entry into the new map before the new program loads;
// after the switch, copy again every entry the old program added or changed since; then pin the
// new map in the old one's place (an atomic rename on bpffs) and record its version.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "bpf_result.h"
#include "unique_fd.h"

namespace meshpath {

// One version of a map's layout. maxEntries 0: the loader sets it (a configured table size).
struct MapLayout {
  uint32_t version = 0;
  uint32_t type = 0;  // enum bpf_map_type
  uint32_t keySize = 0;
  uint32_t valueSize = 0;
  uint32_t flags = 0;
  uint32_t maxEntries = 0;
};

// Converts one entry of layout `from` into layout `to`. Per-CPU maps: called once per CPU's
// value, with the same key. newKey and newValue come zeroed. Maps of maps: the value is the
// inner map's id (u32), as userspace reads it; MapMigration installs the inner map of the id
// the converter leaves (convertAppended: the same one).
using EntryConverter = void (*)(std::span<const uint8_t> oldKey, std::span<const uint8_t> oldValue,
                                std::span<uint8_t> newKey, std::span<uint8_t> newValue);

struct LayoutMigration {
  std::string_view map;
  uint32_t from = 0;
  uint32_t to = 0;
  EntryConverter convert = nullptr;
};

// The layouts every pinned map has had, oldest first (the last is this build's), and the
// registered migrations. Version 1 is each map as of the release before versioning (0d34485).
const std::vector<MapLayout>* layoutHistory(std::string_view map);
const LayoutMigration* findMigration(std::string_view map, uint32_t from, uint32_t to);
// Pinned maps that have a history (every map of abi.h that is pinned).
std::vector<std::string_view> versionedMaps();

// The pin root's version record, <pinRoot>/mp_layout (HASH, char[16] name -> u32 version).
inline constexpr char kLayoutRecordMap[] = "mp_layout";
class LayoutRecord {
 public:
  // Opens the record, creating and pinning it when missing (create = true).
  static BpfResult<LayoutRecord> open(const std::string& pinRoot, bool create);
  // 0 when the map has no record (a pin root of the release before versioning).
  uint32_t version(std::string_view map) const;
  BpfStatus set(std::string_view map, uint32_t version);
  bool valid() const { return fd_.valid(); }

 private:
  UniqueFd fd_;
};

// A pinned map's layout as the kernel holds it.
BpfResult<MapLayout> pinnedLayout(int fd);

// One map being migrated: the pinned (old) map, the new one with this build's layout, and what
// the first copy saw (a hash of each entry) so the second copies only what changed since.
class MapMigration {
 public:
  struct Stats {
    uint64_t copied = 0;   // entries converted by the first copy
    uint64_t changed = 0;  // entries added or changed meanwhile, copied by the second
    uint64_t copyNs = 0;   // the first copy's duration
    uint64_t deltaNs = 0;  // the second copy's
  };

  // Creates the new map (as `compiled` describes it, max_entries as loaded; a map of maps with
  // a template of its compiled inner map) and copies every entry of oldFd into it, converted.
  // Ring buffers have no entries to copy: refused.
  static BpfResult<MapMigration> start(std::string name, const LayoutMigration& migration,
                                       UniqueFd oldFd, bpf_map* compiled);

  // After the program switch: copies the entries the old program added or changed since the
  // first copy (deletions meanwhile are not replayed: those entries expire and the recount reaps
  // them), then pins the new map at pinPath in the old one's place.
  BpfStatus finish(const std::string& pinPath);

  const std::string& name() const { return name_; }
  int newFd() const { return newFd_.get(); }
  uint32_t from() const { return from_; }
  uint32_t to() const { return to_; }
  const Stats& stats() const { return stats_; }

 private:
  BpfResult<uint64_t> copy(bool delta);

  std::string name_;
  uint32_t from_ = 0;
  uint32_t to_ = 0;
  EntryConverter convert_ = nullptr;
  UniqueFd oldFd_;
  UniqueFd newFd_;
  MapLayout oldLayout_;
  MapLayout newLayout_;
  std::unordered_set<uint64_t> seen_;  // hash(key, old value) of every entry the first copy saw
  Stats stats_;
};

}  // namespace meshpath
