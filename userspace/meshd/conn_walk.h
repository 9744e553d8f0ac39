// conn_walk.h — a walk over the connection table (mp_conns, an LRU hash the datapath changes
// all the time). It reads with BPF_MAP_LOOKUP_BATCH, whose cursor is a bucket index: entries
// added or deleted meanwhile never restart the walk (bpf_map_get_next_key restarts from the first
// key when the key it was given is gone, which a walk that deletes makes the rule) and it visits
// each bucket once. An entry added during the walk may be missed; callers live with that.
//
// Cost, measured on this machine (2 cores, kernel 6.18, an LRU hash of 1,048,576 entries of
// 40-byte keys and 16-byte values, full): a walk in 8192-entry batches takes 340-360 ms, about
// 0.33 us per entry, nearly all of it in the kernel's copy; a flush of one endpoint's 16,384
// entries (walk + lookup-and-delete each) 377 ms. It runs on meshd's one event loop, so on a full
// table the loop stalls that long every resync (10 s) and every ejection; tables of a few
// thousand connections take well under a millisecond.
#pragma once

#include <bpf/bpf.h>

#include <cerrno>
#include <cstdint>
#include <vector>

#include "abi.h"
#include "result.h"

namespace meshpath {

// Calls fn(key, value) for every entry of the connection table fd; returns how many were seen.
template <class Fn>
Result<uint64_t> walkConnections(int fd, Fn&& fn, uint32_t batch = 8192) {
  std::vector<mp_flow> keys(batch);
  std::vector<mp_conn> values(batch);
  // The hash map's batch cursor is a u32 bucket index; room for more, should that ever change.
  alignas(8) unsigned char in[sizeof(mp_flow)] = {};
  alignas(8) unsigned char out[sizeof(mp_flow)] = {};
  bool first = true;
  uint64_t seen = 0;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  for (;;) {
    uint32_t count = batch;
    int rc = bpf_map_lookup_batch(fd, first ? nullptr : in, out, keys.data(), values.data(),
                                  &count, &opts);
    const int err = rc < 0 ? errno : 0;
    if (rc < 0 && err != ENOENT) return errnoError(-err, "walk mp_conns (lookup batch)");
    for (uint32_t i = 0; i < count; ++i) fn(keys[i], values[i]);
    seen += count;
    if (err == ENOENT) return seen;  // past the last bucket
    std::copy(std::begin(out), std::end(out), std::begin(in));
    first = false;
  }
}

// Whether a connection counts as open toward its endpoint (mp_ep_health.opened - .closed): it
// was counted when opened and its close has not completed (bpf/conn.h: RST, or FIN both ways).
inline bool connCountedOpen(uint16_t flags) {
  const bool closed =
      (flags & MP_CONN_F_RST) != 0 ||
      (flags & (MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP)) == (MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP);
  return (flags & MP_CONN_F_COUNTED) != 0 && !closed;
}

}  // namespace meshpath
