#include "store_sync.h"

#include <spdlog/spdlog.h>

#include <cerrno>

#include "model.h"

namespace meshpath {

using json = nlohmann::json;

namespace {

constexpr auto kPingEvery = std::chrono::seconds(1);
constexpr auto kRetryMin = std::chrono::milliseconds(200);
constexpr auto kRetryMax = std::chrono::seconds(2);
// A member that does not answer a ping within this is taken as gone (the watch is restarted).
constexpr auto kCallTimeout = std::chrono::milliseconds(1500);
// A node's health key outlives it by this much at most (its lease, renewed by every ping).
constexpr int64_t kHealthLeaseSeconds = 5;

}  // namespace

StoreSync::StoreSync(store::StoreUrl url, std::string node, ControlPlane& controlPlane, Post post)
    : url_(std::move(url)),
      node_(std::move(node)),
      cp_(controlPlane),
      post_(std::move(post)),
      watchClient_(url_.endpoints, kCallTimeout, url_.security),
      writeClient_(url_.endpoints, kCallTimeout, url_.security),
      mirror_(url_.prefix),
      since_(std::chrono::system_clock::now()) {}

StoreSync::~StoreSync() { stop(); }

void StoreSync::start() {
  watchThread_ = std::thread([this] { watchLoop(); });
  writerThread_ = std::thread([this] { writerLoop(); });
}

void StoreSync::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !watchThread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  watchClient_.stopWatch();
  if (watchThread_.joinable()) watchThread_.join();
  if (writerThread_.joinable()) writerThread_.join();
}

// ---- the threads ----

void StoreSync::watchLoop() {
  auto retry = kRetryMin;
  auto pause = [&] {
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, retry, [&] { return stopping_; });
    retry = std::min<std::chrono::milliseconds>(retry * 2, kRetryMax);
    return !stopping_;
  };
  auto stopping = [&] {
    std::lock_guard lock(mu_);
    return stopping_;
  };
  while (!stopping()) {
    auto range = watchClient_.rangePrefix(url_.prefix);
    if (!range) {
      post_([this, e = range.error()] { onPing(e); });
      if (!pause()) return;
      continue;
    }
    int64_t revision = range->revision;
    post_([this, r = std::move(*range)]() mutable { onSnapshot(std::move(r)); });
    retry = kRetryMin;
    while (!stopping()) {
      auto watched = watchClient_.watch(
          url_.prefix, revision + 1, [&](int64_t rev, std::vector<store::WatchEvent> events) {
            revision = rev;
            retry = kRetryMin;
            post_([this, rev, ev = std::move(events)]() mutable { onEvents(rev, std::move(ev)); });
          });
      if (stopping()) return;
      if (!watched && watched.error().code == ECANCELED) {
        spdlog::warn("store: {}; reading the whole prefix again", watched.error().toString());
        break;  // compacted: a fresh range
      }
      if (!watched) post_([this, e = watched.error()] { onPing(e); });
      // Ended (error, or stopped by a failed ping): resume from the last revision seen.
      if (!pause()) return;
    }
  }
}

void StoreSync::writerLoop() {
  auto nextPing = std::chrono::steady_clock::now();
  while (true) {
    std::optional<std::pair<uint64_t, store::StoreWrite>> job;
    std::optional<std::string> verdicts;
    {
      std::unique_lock lock(mu_);
      wake_.wait_until(lock, nextPing, [&] {
        return stopping_ || outgoing_.has_value() || verdictsOutgoing_.has_value();
      });
      if (stopping_) break;
      job = std::exchange(outgoing_, std::nullopt);
      if (!job) verdicts = std::exchange(verdictsOutgoing_, std::nullopt);
    }
    if (verdicts) {
      publishVerdictsNow(*verdicts);
      continue;
    }
    if (job) {
      auto result = writeClient_.txn(job->second.compares, job->second.ops);
      post_([this, ticket = job->first, write = std::move(job->second),
             result = std::move(result)]() mutable {
        onWritten(ticket, std::move(write), std::move(result));
      });
      continue;
    }
    // The ping keeps this node's health key alive too: a lease outlives a few missed pings.
    Result<int64_t> answer = lease_ != 0 ? writeClient_.keepAlive(lease_) : writeClient_.ping();
    if (lease_ != 0 && answer && *answer == 0) {
      lease_ = 0;  // lapsed (etcd was away longer than its TTL): publish again under a new one
      if (!retryVerdicts_) retryVerdicts_ = verdictsPublished_;
    }
    if (answer && retryVerdicts_) {
      std::lock_guard lock(mu_);
      if (!verdictsOutgoing_) verdictsOutgoing_ = std::move(retryVerdicts_);
      retryVerdicts_.reset();
    }
    post_([this, answer = std::move(answer)]() mutable { onPing(std::move(answer)); });
    nextPing = std::chrono::steady_clock::now() + kPingEvery;
  }
  // Leaving: this node's verdicts go with it, at once rather than when the lease lapses.
  if (lease_ != 0) (void)writeClient_.revokeLease(lease_);
}

void StoreSync::publishVerdictsNow(const std::string& value) {
  if (lease_ == 0) {
    auto lease = writeClient_.grantLease(kHealthLeaseSeconds);
    if (!lease) {
      retryVerdicts_ = value;  // again after the next ping that etcd answers
      return;
    }
    lease_ = *lease;
  }
  const std::string key = store::healthKey(url_.prefix, node_);
  auto put = writeClient_.txn({}, {{store::TxnOp::Kind::kPut, key, value, lease_}});
  if (put) {
    verdictsPublished_ = value;
    retryVerdicts_.reset();
  } else {
    lease_ = 0;  // perhaps gone: a new one next time
    retryVerdicts_ = value;
  }
}

// ---- on the event loop ----

void StoreSync::onPing(Result<int64_t> answer) {
  const auto now = std::chrono::system_clock::now();
  if (answer) {
    if (!connected_) {
      connected_ = true;
      reportedDown_ = false;
      since_ = now;
      lastError_.clear();
      spdlog::info("store: etcd reachable at {}", url_.toString());
      emit("store_connected", "etcd reachable at " + url_.toString(),
           json{{"store", url_.toString()}});
    }
    return;
  }
  lastError_ = answer.error().toString();
  if (reportedDown_) return;  // once per spell, not per failed attempt
  reportedDown_ = true;
  const bool wasUp = connected_;
  connected_ = false;
  if (wasUp) since_ = now;
  const std::string when = wasUp ? "" : " at start";
  spdlog::warn("store: etcd unreachable{} ({}); forwarding with the last known state ({} services)",
               when, lastError_, cp_.desired().services.size());
  emit("store_disconnected",
       "etcd unreachable" + when + ": " + lastError_ + "; forwarding with the last known state",
       json{{"store", url_.toString()}, {"error", lastError_}});
  if (wasUp) watchClient_.stopWatch();  // a watch on a partitioned member would wait forever
}

void StoreSync::onSnapshot(store::RangeResult range) {
  if (haveSnapshot_) ++resyncs_;
  haveSnapshot_ = true;
  wholeState_ = true;
  mirror_.reset(range.kvs);
  mirrorChanged(range.revision);
}

void StoreSync::onEvents(int64_t revision, std::vector<store::WatchEvent> events) {
  mirror_.apply(events);
  mirrorChanged(revision);
}

void StoreSync::mirrorChanged(int64_t revision) {
  (void)cp_.setMeshVerdicts(mirror_.verdictsOfOthers(node_));
  seenRevision_ = std::max(seenRevision_, revision);
  mirrorDirty_ = true;
  onPing(revision);  // etcd answered
  scheduleApply();
}

void StoreSync::scheduleApply() {
  if (applyScheduled_) return;
  applyScheduled_ = true;
  // Later in this loop turn's queue, so the batches that arrived together are applied as one.
  post_([this] {
    applyScheduled_ = false;
    applyMirror();
  });
}

void StoreSync::applyMirror() {
  // A local change not yet in the store is not in the mirror: applying now would undo it.
  if (!mirrorDirty_ || !haveSnapshot_ || writing_ || !queue_.empty()) return;
  mirrorDirty_ = false;
  std::vector<store::KeyProblem> problems;
  // What changed in the mirror, when the node held the mirror's state before it: a change costs
  // its own services. The whole state when the node may differ from the mirror elsewhere (the
  // first snapshot, a resync, a write of ours etcd refused, a state that was not applied).
  std::optional<ServiceChanges> changes;
  if (!wholeState_) changes = mirror_.changes(cp_.desired().node, &problems);
  std::optional<DesiredState> whole;
  if (!changes) {
    whole = cp_.desired();
    whole->services = mirror_.services(whole->node, &problems);
  }
  for (const store::KeyProblem& p : problems) {
    bool known = false;
    for (const store::KeyProblem& q : problems_)
      known = known || (q.key == p.key && q.problem == p.problem);
    if (known) continue;
    spdlog::warn("store: {} left out: {}", p.key, p.problem);
    emit("store_refused", p.key + " left out: " + p.problem,
         json{{"key", p.key}, {"problems", json::array({p.problem})}});
  }
  problems_ = std::move(problems);
  auto applied = changes ? cp_.commitFromStore(*changes) : cp_.commitFromStore(*whole);
  wholeState_ = !applied;
  if (!applied) {
    // The state as a whole breaks a rule across services (two services on one VIP:port, too many
    // services): the node keeps what it has until the store's state is valid again.
    if (refused_ != applied.error().error) {
      spdlog::error("store: revision {} not applied, keeping the last state: {}", seenRevision_,
                    applied.error().error);
      emit("store_refused",
           "revision " + std::to_string(seenRevision_) + " not applied: " + applied.error().error,
           json{{"problems", applied.error().detail.is_object()
                                 ? applied.error().detail.value("problems", json::array())
                                 : json::array({applied.error().error})}});
    }
    refused_ = applied.error().error;
    return;
  }
  refused_.clear();
  appliedRevision_ = seenRevision_;
}

void StoreSync::publishVerdicts(const std::map<std::string, std::set<std::string>>& own) {
  std::string value = store::verdictsValue(own);
  {
    std::lock_guard lock(mu_);
    if (value == lastVerdicts_) return;
    lastVerdicts_ = value;
    verdictsOutgoing_ = std::move(value);
  }
  wake_.notify_all();
}

std::optional<ApiError> StoreSync::refuseWrites() const {
  if (connected_ && haveSnapshot_) return std::nullopt;
  return ApiError{503,
                  "the store (etcd) is unreachable" +
                      (lastError_.empty() ? std::string() : ": " + lastError_) +
                      "; this node forwards with the last known state and takes no changes",
                  "bring etcd back (etcdctl --endpoints=... endpoint health); meshd resyncs by "
                  "itself, then try again"};
}

uint64_t StoreSync::publish(const std::vector<ServiceSpec>& before,
                            const std::vector<ServiceSpec>& after) {
  const uint64_t ticket = nextTicket_++;
  queue_.push_back(Pending{ticket, before, after});
  dispatchWrite();
  return ticket;
}

void StoreSync::dispatchWrite() {
  while (!writing_ && !queue_.empty()) {
    Pending next = std::move(queue_.front());
    queue_.pop_front();
    // Against the mirror as it is now, so it holds every earlier write of this node.
    store::StoreWrite write = store::writeFor(mirror_, next.before, next.after);
    if (write.empty()) {
      resolve(next.ticket, std::nullopt);
      continue;
    }
    writing_ = true;
    {
      std::lock_guard lock(mu_);
      outgoing_.emplace(next.ticket, std::move(write));
    }
    wake_.notify_all();
  }
  if (!writing_ && queue_.empty()) applyMirror();
}

void StoreSync::onWritten(uint64_t ticket, store::StoreWrite write,
                          Result<store::TxnResult> result) {
  writing_ = false;
  std::optional<ApiError> failed;
  if (!result) {
    ++writeFailures_;
    // Unconfirmed, not refused: etcd may still apply it (a member that was slow, not gone). The
    // node goes back to what etcd holds and follows its watch, so it ends up either way with what
    // etcd decided.
    failed = ApiError{503,
                      "etcd did not confirm the change (" + result.error().toString() +
                          "); it was undone on this node and takes effect only if etcd applied it "
                          "after all",
                      "check with `meshctl service show` once etcd answers, and send it again if "
                      "it is missing"};
  } else if (!result->succeeded) {
    ++writeFailures_;
    failed = ApiError{409,
                      "another writer changed these services in the store meanwhile; the change "
                      "was undone on this node",
                      "see the current state (`meshctl service list`) and try again"};
  } else {
    ++writes_;
    // The mirror takes the write now (the watch brings the same events later, and they are ignored
    // as not newer), so the next write is guarded by these revisions.
    std::vector<store::WatchEvent> events;
    for (const store::TxnOp& op : write.ops) {
      store::WatchEvent ev;
      ev.deleted = op.kind == store::TxnOp::Kind::kDelete;
      ev.kv = store::KeyValue{op.key, op.value, result->revision, op.lease};
      events.push_back(std::move(ev));
    }
    mirror_.apply(events);
    seenRevision_ = std::max(seenRevision_, result->revision);
  }
  if (failed) {
    spdlog::warn("store: {}", failed->error);
    mirrorDirty_ = true;  // back to the store's state: the services written, and any other
    wholeState_ = true;
  }
  resolve(ticket, failed);
  dispatchWrite();
}

void StoreSync::resolve(uint64_t ticket, std::optional<ApiError> outcome) {
  auto range = waiting_.equal_range(ticket);
  if (range.first == range.second) {
    outcomes_[ticket] = std::move(outcome);
    return;
  }
  std::vector<std::function<void(std::optional<ApiError>)>> callbacks;
  for (auto it = range.first; it != range.second; ++it) callbacks.push_back(std::move(it->second));
  waiting_.erase(range.first, range.second);
  for (auto& cb : callbacks) cb(outcome);
}

void StoreSync::whenWritten(uint64_t ticket, std::function<void(std::optional<ApiError>)> done) {
  auto it = outcomes_.find(ticket);
  if (it != outcomes_.end()) {
    auto outcome = std::move(it->second);
    outcomes_.erase(it);
    done(std::move(outcome));
    return;
  }
  waiting_.emplace(ticket, std::move(done));
}

json StoreSync::statusJson() const {
  json problems = json::array();
  for (const store::KeyProblem& p : problems_) {
    problems.push_back({{"key", p.key}, {"problem", p.problem}});
  }
  json mesh = json::array();
  for (const MeshVerdict& v : cp_.meshVerdicts()) {
    mesh.push_back({{"service", v.service},
                    {"endpoint", v.endpoint},
                    {"failing_on", v.failing},
                    {"nodes", v.nodes},
                    {"here", v.here},
                    {"mesh_wide", v.meshWide}});
  }
  return json{{"kind", "etcd"},
              {"url", url_.toString()},
              {"node", node_},
              {"mesh_health", mesh},
              {"prefix", url_.prefix},
              {"connected", connected_},
              {"synced", haveSnapshot_},
              {"since", formatUtcTime(since_)},
              {"error", lastError_.empty() ? json(nullptr) : json(lastError_)},
              {"revision", appliedRevision_},
              {"seen_revision", seenRevision_},
              {"refused", refused_.empty() ? json(nullptr) : json(refused_)},
              {"keys_left_out", problems},
              {"writes", writes_},
              {"write_failures", writeFailures_},
              {"resyncs", resyncs_}};
}

void StoreSync::emit(const std::string& kind, const std::string& message, const json& detail) {
  if (events_) events_(kind, message, detail);
}

}  // namespace meshpath
