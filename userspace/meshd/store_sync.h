// store_sync.h — meshd --store etcd://...: the services and endpoints live in etcd, shared by every
// node that watches the same prefix (store_layout.h has the keys).
//
// Reading. A thread of its own reads the whole prefix, then watches it from the next revision,
// resuming from the last revision seen after a disconnect (and reading everything again only if
// etcd compacted that revision away). Each batch of events lands in a mirror of the keys on the
// event loop, which turns them into services and commits them through the control plane like any
// other change: only the services that changed are touched, so a resync after an outage is one
// diff, never an empty ring. A key that does not parse is left out and reported; it changes nothing
// else.
//
// Writing. A change asked of this node (REST API, meshctl) is applied here at once, as without a
// store, and written to etcd by a second thread as one transaction guarded by the revisions this
// node had seen, so it never overwrites a change it did not see. Writes go one at a time; while one
// is pending, the mirror is not re-applied (that would undo the local change for a moment). A write
// that fails (etcd unreachable, or a conflicting change) is undone by re-applying the mirror, and
// the API answers with the error. The API answers a change only once etcd has it.
//
// Outage. The same thread pings etcd every second. Unreachable: the node keeps forwarding with the
// last state it had (also kept in the state file across restarts), refuses changes with 503, and
// says so in /v1/status, events (store_disconnected / store_connected) and metrics.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "control_plane.h"
#include "etcd_client.h"
#include "store_layout.h"

namespace meshpath {

class StoreSync : public SharedStore {
 public:
  using Post = std::function<void(std::function<void()>)>;
  // store_connected / store_disconnected / store_refused, as the control plane's events.
  using EventSink = std::function<void(const std::string& kind, const std::string& message,
                                       const nlohmann::json& detail)>;

  // `node`: this node's name among the nodes of the prefix (its health key).
  StoreSync(store::StoreUrl url, std::string node, ControlPlane& controlPlane, Post post);
  ~StoreSync() override;
  StoreSync(const StoreSync&) = delete;
  StoreSync& operator=(const StoreSync&) = delete;

  void onEvent(EventSink sink) { events_ = std::move(sink); }
  void start();
  void stop();  // joins the threads; the node keeps what it has

  // SharedStore (called by the control plane, on the event loop)
  std::optional<ApiError> refuseWrites() const override;
  uint64_t publish(const std::vector<ServiceSpec>& before,
                   const std::vector<ServiceSpec>& after) override;
  void whenWritten(uint64_t ticket, std::function<void(std::optional<ApiError>)> done) override;
  nlohmann::json statusJson() const override;
  void publishVerdicts(const std::map<std::string, std::set<std::string>>& own) override;

  bool connected() const { return connected_; }
  int64_t appliedRevision() const { return appliedRevision_; }

 private:
  struct Pending {  // a local change waiting to be written
    uint64_t ticket;
    std::vector<ServiceSpec> before, after;
  };

  void watchLoop();   // the watch thread
  void writerLoop();  // the writer thread: writes, and pings when idle
  void publishVerdictsNow(const std::string& value);  // the writer thread
  // On the loop:
  void onSnapshot(store::RangeResult range);
  void onEvents(int64_t revision, std::vector<store::WatchEvent> events);
  void mirrorChanged(int64_t revision);  // after a snapshot or events: verdicts, then the apply
  void onPing(Result<int64_t> answer);
  void onWritten(uint64_t ticket, store::StoreWrite write, Result<store::TxnResult> result);
  void dispatchWrite();
  void scheduleApply();
  void applyMirror();
  void resolve(uint64_t ticket, std::optional<ApiError> outcome);
  void emit(const std::string& kind, const std::string& message, const nlohmann::json& detail);

  store::StoreUrl url_;
  std::string node_;
  ControlPlane& cp_;
  Post post_;
  EventSink events_;
  store::EtcdClient watchClient_;
  store::EtcdClient writeClient_;

  // Loop-owned.
  store::StoreMirror mirror_;
  bool haveSnapshot_ = false;
  bool mirrorDirty_ = false;
  // The next apply takes the mirror's whole state, not what changed in it (applyMirror).
  bool wholeState_ = true;
  bool applyScheduled_ = false;
  int64_t seenRevision_ = 0;     // newest revision the watch (or a write) brought
  int64_t appliedRevision_ = 0;  // the mirror's revision last committed
  bool connected_ = false;
  bool reportedDown_ = false;  // this spell of unreachability was logged and sent as an event
  std::string lastError_;
  std::chrono::system_clock::time_point since_;  // of the current connected/disconnected spell
  std::vector<store::KeyProblem> problems_;      // keys left out at the last apply
  std::string refused_;                          // why the last apply was refused, if it was
  uint64_t nextTicket_ = 1;
  std::deque<Pending> queue_;
  bool writing_ = false;
  std::map<uint64_t, std::optional<ApiError>> outcomes_;  // written (or failed), not yet asked for
  std::multimap<uint64_t, std::function<void(std::optional<ApiError>)>> waiting_;
  uint64_t writes_ = 0, writeFailures_ = 0, resyncs_ = 0;

  // Shared with the threads.
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::optional<std::pair<uint64_t, store::StoreWrite>> outgoing_;  // for the writer thread
  // This node's verdicts to publish (the newest), and the lease its health key lives under (the
  // writer thread's; kept alive by its pings).
  std::optional<std::string> verdictsOutgoing_;
  std::string verdictsPublished_;
  std::string lastVerdicts_ = "-";  // the newest handed over (the loop's; under mu_)
  int64_t lease_ = 0;
  std::optional<std::string> retryVerdicts_;  // a publish that failed (the writer thread's)
  std::thread watchThread_;
  std::thread writerThread_;
};

}  // namespace meshpath
