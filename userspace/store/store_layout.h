// store_layout.h — how the desired state sits in etcd (docs/etcd.md), written once for meshd (the
// watch, the API's writes) and meshctl (registration):
//
//   PREFIX/services/NAME             the service: JSON, the API's service object without "name"
//                                    (the key has it) and without "endpoints"
//   PREFIX/endpoints/NAME/ADDR:PORT  one endpoint of service NAME: {"weight": N} or empty (weight
//                                    1); [ADDR]:PORT for IPv6. Often under a lease: an endpoint
//                                    that registered itself leaves with it.
//
// One key per endpoint, so that a registration, a weight or a drain is one small write that no
// other writer's change can overwrite, and a lapsed lease removes exactly its endpoint.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "etcd_client.h"
#include "model.h"

namespace meshpath::store {

std::string serviceKey(const std::string& prefix, const std::string& service);
std::string endpointKey(const std::string& prefix, const std::string& service,
                        const EndpointSpec& endpoint);
std::string serviceValue(const ServiceSpec& service);  // endpoints left out
// PREFIX/health/NODE: the endpoints node NODE's own checks take out, {"SERVICE": ["ADDR:PORT",
// ...]}, under the node's lease (it goes when the node does).
std::string healthDir(const std::string& prefix);
std::string healthKey(const std::string& prefix, const std::string& node);
using Verdicts = std::map<std::string, std::set<std::string>>;  // service -> endpoint keys out
std::string verdictsValue(const Verdicts& verdicts);
std::string endpointValue(const EndpointSpec& endpoint);

// A key under the prefix that meshpath could not use, and why (a bad value someone wrote).
struct KeyProblem {
  std::string key;
  std::string problem;
};

// The keys under one prefix as this node last saw them (a range, then watch events).
class StoreMirror {
 public:
  explicit StoreMirror(std::string prefix) : prefix_(std::move(prefix)) {}

  const std::string& prefix() const { return prefix_; }
  void reset(const std::vector<KeyValue>& kvs);  // a whole range
  // Events older than what the mirror holds for their key are ignored: a node's own write is
  // applied as soon as etcd confirms it, and the watch brings the same write (and any older one to
  // that key) later.
  void apply(const std::vector<WatchEvent>& events);
  const std::map<std::string, KeyValue>& keys() const { return keys_; }
  // The key's mod revision; 0 when absent (a transaction's compare).
  int64_t modRevision(const std::string& key) const;
  // Every other node's published verdicts (health keys that do not parse are skipped).
  std::map<std::string, Verdicts> verdictsOfOthers(const std::string& self) const;

  // The services the keys describe, by name, each with its endpoints in address order (so the state
  // does not depend on the order keys were written in). A key that does not parse, or an endpoint
  // of a service that does not exist, or a service that breaks one of `node`'s rules
  // (validateService), is left out and named in `problems`.
  //
  // Incremental: only the services whose keys changed since the last call are parsed again (a
  // one-endpoint change costs that service, not the 10,000 others).
  std::vector<ServiceSpec> services(const NodeSpec& node, std::vector<KeyProblem>* problems);
  // The same as a change since the last services() or changes(): the services whose keys changed
  // (put, or removed when none of theirs is left or they no longer build). nullopt when it cannot
  // tell (nothing built yet for `node`, or reset() since): take services() then.
  std::optional<ServiceChanges> changes(const NodeSpec& node, std::vector<KeyProblem>* problems);

 private:
  // The service a key under the prefix belongs to ("" for a key right under services/ or
  // endpoints/, or of neither kind).
  std::string serviceOf(const std::string& key) const;
  void rebuild(const std::string& name, const NodeSpec& node);
  // Rebuilds the services whose keys changed (every one after reset() or for another node) and
  // returns their names; every service's problems go to `problems`.
  std::set<std::string> rebuildChanged(const NodeSpec& node, std::vector<KeyProblem>* problems);

  std::string prefix_;
  std::map<std::string, KeyValue> keys_;
  std::map<std::string, int64_t> deleted_;  // key -> the revision that deleted it
  // What services() built, by service name, and the problems of each service's keys.
  std::map<std::string, ServiceSpec> built_;
  std::map<std::string, std::vector<KeyProblem>> problems_;
  std::set<std::string> changed_;  // services whose keys changed since the last build
  bool allChanged_ = true;
  std::optional<NodeSpec> builtFor_;
};

// The writes that turn `before` into `after` (services compared by name, endpoints by address and
// port), each guarded by the mod revision the mirror holds for its key, so a change made from a
// stale view fails as a whole instead of overwriting someone else's.
struct StoreWrite {
  std::vector<TxnCompare> compares;
  std::vector<TxnOp> ops;
  bool empty() const { return ops.empty(); }
};
StoreWrite writeFor(const StoreMirror& mirror, const std::vector<ServiceSpec>& before,
                    const std::vector<ServiceSpec>& after);

}  // namespace meshpath::store
