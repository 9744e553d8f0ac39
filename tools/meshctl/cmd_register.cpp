// cmd_register.cpp — `meshctl register`: an endpoint joins a service of the shared store (meshd
// --store etcd://...) for as long as the command runs. Its key (store_layout.h) is written under an
// etcd lease that this process keeps alive. On SIGINT/SIGTERM the lease is revoked, so the endpoint
// leaves every node at once; if the process dies instead, the lease lapses after --ttl and the
// endpoint leaves then.
//
// It talks to etcd itself, not through meshd: meshd only tells where the store is when --store is
// not given, so a registration outlives a restart of the local daemon.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "address.h"
#include "cli.h"
#include "commands.h"
#include "etcd_client.h"
#include "json_fields.h"
#include "model.h"
#include "store_layout.h"

namespace meshpath::meshctl {

using nlohmann::json;
using std::chrono::milliseconds;

namespace {

std::atomic<bool> stopRequested{false};  // set by SIGINT / SIGTERM

void onStopSignal(int) { stopRequested.store(true); }

void installStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  // A second Ctrl-C while the lease is being revoked (etcd slow to answer) ends meshctl at once.
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Sleeps `d` in small steps, so a stop signal is noticed within 50 ms; false once one came.
bool sleepUnlessStopped(milliseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (!stopRequested.load()) {
    const auto left = until - std::chrono::steady_clock::now();
    if (left <= milliseconds(0)) return true;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(left, milliseconds(50)));
  }
  return false;
}

const char* kStoreHint =
    "pass the store with --store etcd://HOST:PORT/PREFIX (the one the nodes' meshd --store names)";

// --store as given, or the store the local meshd watches (GET /v1/status). A failure is reported
// here and its exit code left in `exitCode`.
std::optional<store::StoreUrl> findStore(const Context& ctx, const std::string& given,
                                         int* exitCode) {
  if (!given.empty()) {
    auto url = store::parseStoreUrl(given);
    if (!url) {
      *exitCode = ctx.usage(url.error().context + " (" + url.error().hint + ")");
      return std::nullopt;
    }
    return *url;
  }
  auto reply = ctx.api().get("/v1/status");
  if (!reply.reached()) {
    *exitCode =
        ctx.refused("no --store given, and meshd is not reachable at " + ctx.api().socketPath() +
                        " to tell its store (" + reply.transportError + ")",
                    kStoreHint);
    return std::nullopt;
  }
  if (!reply.ok()) {
    *exitCode = ctx.refused("no --store given, and meshd did not tell its store (HTTP " +
                                std::to_string(reply.status) + ")",
                            kStoreHint);
    return std::nullopt;
  }
  const json& st = obj(reply.body, "store");
  if (str(st, "kind") != "etcd") {
    *exitCode = ctx.refused(
        std::string("no --store given, and the local meshd ") +
            (st.empty() ? "does not report a store (a meshd from before --store)"
                        : "keeps its services in its config file, not in a shared store"),
        kStoreHint);
    return std::nullopt;
  }
  auto url = store::parseStoreUrl(str(st, "url"));
  if (!url) {
    *exitCode = ctx.refused("meshd reports a store meshctl cannot read: " + url.error().context,
                            kStoreHint);
    return std::nullopt;
  }
  return *url;
}

// One endpoint's key in the store, kept under a lease until a stop signal.
class Registration {
 public:
  Registration(const Context& ctx, store::StoreUrl url, std::string service, EndpointSpec endpoint,
               int64_t ttlSeconds)
      : ctx_(ctx),
        url_(std::move(url)),
        service_(std::move(service)),
        endpoint_(std::move(endpoint)),
        ttlSeconds_(ttlSeconds),
        key_(store::endpointKey(url_.prefix, service_, endpoint_)),
        // Each call gets a third of the TTL (kept within 0.5-2 s), so a member that does not answer
        // leaves time to renew through another one before the lease lapses.
        client_(url_.endpoints, milliseconds(std::clamp<int64_t>(ttlSeconds * 1000 / 3, 500, 2000)),
                url_.security) {}

  int run() {
    // Three renewals per TTL: one lost renewal does not lose the lease.
    const milliseconds renewEvery =
        std::max(milliseconds(300), milliseconds(ttlSeconds_ * 1000 / 3));
    while (!stopRequested.load()) {
      if (!registered_) {
        registerKey();
        if (!registered_) sleepUnlessStopped(renewEvery);
        continue;
      }
      if (!sleepUnlessStopped(renewEvery)) break;
      auto left = client_.keepAlive(lease_);
      if (!left) {
        trouble("cannot renew lease " + std::to_string(lease_) + ": " + left.error().toString());
        continue;
      }
      answered();
      if (*left == 0) {
        std::cerr << "meshctl: lease " << lease_ << " is gone (it lapsed while etcd was out of "
                  << "reach for longer than the ttl, " << ttlSeconds_
                  << "s, or someone revoked it): " << endpoint_.key() << " left service "
                  << service_ << "; registering it again" << std::endl;
        lease_ = 0;
        registered_ = false;
      }
    }
    return deregister();
  }

 private:
  // Grants a lease (unless one is held) and puts the key under it; a failure is reported and the
  // next round tries again.
  void registerKey() {
    if (lease_ == 0) {
      auto granted = client_.grantLease(ttlSeconds_);
      if (!granted) {
        trouble("cannot register in " + url_.toString() + ": " + granted.error().toString());
        return;
      }
      lease_ = *granted;
    }
    store::TxnOp put{store::TxnOp::Kind::kPut, key_, store::endpointValue(endpoint_), lease_};
    auto written = client_.txn({}, {put});
    if (!written) {
      const std::string error = written.error().toString();
      // The lease lapsed between the grant and the put (etcd was out of reach meanwhile).
      if (error.find("lease not found") != std::string::npos) lease_ = 0;
      trouble("cannot register in " + url_.toString() + ": " + error);
      return;
    }
    answered();
    registered_ = true;
    if (everRegistered_) {
      std::cerr << "meshctl: registered " << endpoint_.key() << " in service " << service_
                << " again (lease " << lease_ << ", ttl " << ttlSeconds_ << "s)" << std::endl;
      if (ctx_.json()) std::cout << event("renewed_lease").dump() << std::endl;
      return;
    }
    everRegistered_ = true;
    if (ctx_.json()) {
      std::cout << event("registered").dump() << std::endl;
    } else {
      std::cout << "registered " << endpoint_.key() << " in service " << service_ << " ("
                << (endpoint_.weight != 1 ? "weight " + std::to_string(endpoint_.weight) + ", "
                                          : "")
                << "lease " << lease_ << ", ttl " << ttlSeconds_ << "s) at " << url_.toString()
                << "; Ctrl-C to deregister" << std::endl;
    }
    warnIfNoService();
  }

  // Nodes leave out an endpoint of a service the store does not have (store_layout.h), so a
  // registration under a mistyped service name would otherwise look like it worked.
  void warnIfNoService() {
    const std::string serviceKey = store::serviceKey(url_.prefix, service_);
    auto range = client_.rangePrefix(serviceKey);
    if (!range) return;
    for (const store::KeyValue& kv : range->kvs) {
      if (kv.key == serviceKey) return;
    }
    std::cerr << "meshctl: note: the store has no service " << service_ << " (no key " << serviceKey
              << "); nodes leave this endpoint out until it is added" << std::endl;
  }

  int deregister() {
    if (!everRegistered_) {
      if (lease_ != 0) (void)client_.revokeLease(lease_);  // granted, but the put never made it
      std::cerr << "meshctl: stopped before " << endpoint_.key() << " was registered" << std::endl;
      return kExitRefused;
    }
    if (lease_ != 0) {
      auto revoked = client_.revokeLease(lease_);
      if (!revoked) {
        std::cerr << "meshctl: cannot revoke lease " << lease_ << ": " << revoked.error().toString()
                  << "\n  hint: " << endpoint_.key() << " leaves service " << service_
                  << " when the lease lapses, within " << ttlSeconds_ << "s" << std::endl;
        return kExitRefused;
      }
    }
    if (ctx_.json()) {
      std::cout << event("deregistered").dump() << std::endl;
    } else {
      std::cout << "deregistered " << endpoint_.key() << " from service " << service_
                << (lease_ == 0 ? " (its lease had expired)"
                                : " (lease " + std::to_string(lease_) + " revoked)")
                << std::endl;
    }
    return kExitOk;
  }

  // One stderr line when etcd stops answering, one when it answers again; not one per attempt.
  void trouble(const std::string& what) {
    if (troubled_) return;
    troubled_ = true;
    std::cerr << "meshctl: " << what << "; retrying" << std::endl;
  }
  void answered() {
    if (!troubled_) return;
    troubled_ = false;
    std::cerr << "meshctl: etcd at " << url_.toString() << " answers again" << std::endl;
  }

  // -o json: one object per line, "event" first.
  nlohmann::ordered_json event(const char* kind) const {
    return nlohmann::ordered_json{{"event", kind},
                                  {"service", service_},
                                  {"endpoint", endpoint_.key()},
                                  {"weight", endpoint_.weight},
                                  {"key", key_},
                                  {"lease", lease_},
                                  {"ttl_s", ttlSeconds_},
                                  {"store", url_.toString()}};
  }

  const Context& ctx_;
  const store::StoreUrl url_;
  const std::string service_;
  const EndpointSpec endpoint_;
  const int64_t ttlSeconds_;
  const std::string key_;
  const store::EtcdClient client_;
  int64_t lease_ = 0;  // 0: none held
  bool registered_ = false;
  bool everRegistered_ = false;
  bool troubled_ = false;  // the last call failed (and said so)
};

}  // namespace

int cmdRegister(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  auto ep = parseEndpoint(a.endpoint, /*allowWeight=*/false, &error);
  if (!ep) return ctx.usage(error);
  EndpointSpec endpoint;
  endpoint.address = *IpAddress::parse(ep->address);  // parseEndpoint checked it
  endpoint.port = ep->port;
  if (!a.weight.empty()) {
    auto w = parseWeight(a.weight, &error);
    if (!w) return ctx.usage(error);
    endpoint.weight = *w;
  }
  auto ttl = parseTtlSeconds(a.ttl, &error);
  if (!ttl) return ctx.usage(error);
  int exitCode = kExitOk;
  auto url = findStore(ctx, a.store, &exitCode);
  if (!url) return exitCode;
  auto security = store::storeSecurity(a.storeSecurity);
  if (!security) return ctx.usage(security.error().toString() + " (" + security.error().hint + ")");
  url->security = *security;

  installStopHandlers();
  return Registration(ctx, std::move(*url), a.service, endpoint, *ttl).run();
}

}  // namespace meshpath::meshctl
