// meshd's etcd store (store_sync.h, etcd_client.h) against a real etcd (Debian's etcd-server,
// started on loopback by the test; label "store", skipped only where etcd is not installed): the
// client's calls and their failure modes, two nodes converging on one prefix, and a write that
// cannot reach etcd undone on the node that made it. Below the store, the dataplane is the fake.
#include "store_sync.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "control_plane_rig.h"
#include "etcd_client.h"
#include "store_layout.h"

namespace meshpath {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const char* kEtcd = "/usr/bin/etcd";

// One etcd member on loopback, on ports of its own (the test's pid picks them).
class Etcd {
 public:
  explicit Etcd(const fs::path& dir) : dir_(dir) {
    port_ = static_cast<uint16_t>(30000 + (::getpid() % 1000) * 2);
  }
  ~Etcd() { stop(SIGKILL); }
  uint16_t port() const { return port_; }
  std::string hostPort() const { return "127.0.0.1:" + std::to_string(port_); }

  bool start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string client = "http://" + hostPort();
      std::string peer = "http://127.0.0.1:" + std::to_string(port_ + 1);
      std::string log = (dir_ / "etcd.log").string();
      FILE* f = std::freopen(log.c_str(), "a", stdout);
      (void)f;
      ::dup2(STDOUT_FILENO, STDERR_FILENO);
      ::execl(kEtcd, kEtcd, "--data-dir", (dir_ / "data").c_str(), "--listen-client-urls",
              client.c_str(), "--advertise-client-urls", client.c_str(), "--listen-peer-urls",
              peer.c_str(), "--initial-advertise-peer-urls", peer.c_str(), "--initial-cluster",
              ("default=" + peer).c_str(), nullptr);
      ::_exit(127);
    }
    store::EtcdClient probe({{"127.0.0.1", port_}}, 500ms);
    for (int i = 0; i < 100; ++i) {
      if (probe.ping()) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  void stop(int sig = SIGTERM) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    if (sig == SIGSTOP) return;
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

 private:
  fs::path dir_;
  uint16_t port_;
  pid_t pid_ = -1;
};

// The event loop's queue, run by hand (the store's threads post here).
struct Loop {
  std::mutex mu;
  std::vector<std::function<void()>> queued;
  StoreSync::Post post() {
    return [this](std::function<void()> f) {
      std::lock_guard lock(mu);
      queued.push_back(std::move(f));
    };
  }
  void run() {
    for (int i = 0; i < 100; ++i) {  // what runs may post more
      std::vector<std::function<void()>> now;
      {
        std::lock_guard lock(mu);
        now.swap(queued);
      }
      if (now.empty()) return;
      for (auto& f : now) f();
    }
  }
  // Runs the loop until `done` holds or `limit` passes.
  bool until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      run();
      if (done()) return true;
      std::this_thread::sleep_for(5ms);
    }
    run();
    return done();
  }
};

// One meshd's control plane over a fake dataplane, with its store.
struct Node : testing::ControlPlaneRig {
  Node(const fs::path& dir, const std::string& name, const store::StoreUrl& url, Loop& loop)
      : ControlPlaneRig(dir / (name + ".json")) {
    EXPECT_TRUE(started);
    sync = std::make_unique<StoreSync>(url, name, *cp, loop.post());
    cp->setSharedStore(sync.get());
    sync->start();
  }
  ~Node() {
    sync->stop();
    cp->setSharedStore(nullptr);
  }
  const ServiceSpec* web() const { return cp->findService("web"); }

  std::unique_ptr<StoreSync> sync;
};

EndpointSpec endpoint(const std::string& address, uint32_t weight = 1) {
  return EndpointSpec{*IpAddress::parse(address), 8080, weight};
}

ServiceSpec web(std::vector<EndpointSpec> endpoints) {
  ServiceSpec s;
  s.name = "web";
  s.vip = *IpAddress::parse("10.0.0.100");
  s.port = 80;
  s.endpoints = std::move(endpoints);
  return s;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kEtcd))
      GTEST_SKIP() << "etcd-server is not installed (apt-get install etcd-server)";
    dir_ = fs::temp_directory_path() / ("store_sync_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    etcd_ = std::make_unique<Etcd>(dir_);
    ASSERT_TRUE(etcd_->start()) << "etcd did not start; see " << (dir_ / "etcd.log");
    url_.endpoints = {{"127.0.0.1", etcd_->port()}};
    url_.prefix = "/test" + std::to_string(::getpid());
  }
  void TearDown() override {
    etcd_.reset();
    fs::remove_all(dir_);
  }

  fs::path dir_;
  std::unique_ptr<Etcd> etcd_;
  store::StoreUrl url_;
};

TEST_F(StoreTest, ClientCallsAndTheirFailures) {
  // A dead member first: the client goes on to the next one.
  store::EtcdClient client({{"127.0.0.1", 1}, {"127.0.0.1", etcd_->port()}}, 1000ms);
  const std::string key = url_.prefix + "/services/a";
  auto put = client.txn({{key, 0}}, {{store::TxnOp::Kind::kPut, key, "one", 0}});
  ASSERT_TRUE(put) << put.error().toString();
  EXPECT_TRUE(put->succeeded);
  // Guarded by a revision that is no longer the key's: refused, nothing written.
  auto stale = client.txn({{key, 0}}, {{store::TxnOp::Kind::kPut, key, "two", 0}});
  ASSERT_TRUE(stale);
  EXPECT_FALSE(stale->succeeded);
  auto range = client.rangePrefix(url_.prefix);
  ASSERT_TRUE(range);
  ASSERT_EQ(range->kvs.size(), 1u);
  EXPECT_EQ(range->kvs[0].value, "one");
  EXPECT_EQ(range->kvs[0].modRevision, put->revision);

  // A watch from an old revision replays what came after it, in order.
  ASSERT_TRUE(client.txn({}, {{store::TxnOp::Kind::kPut, key, "three", 0}}));
  ASSERT_TRUE(client.txn({}, {{store::TxnOp::Kind::kDelete, key, "", 0}}));
  std::vector<store::WatchEvent> seen;
  store::EtcdClient watcher({{"127.0.0.1", etcd_->port()}}, 1000ms);
  std::thread stopper;
  auto watched = watcher.watch(url_.prefix, put->revision, [&](int64_t, auto events) {
    for (auto& e : events) seen.push_back(e);
    if (seen.size() >= 3 && !stopper.joinable())
      stopper = std::thread([&] { watcher.stopWatch(); });
  });
  if (stopper.joinable()) stopper.join();
  EXPECT_TRUE(watched) << watched.error().toString();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].kv.value, "one");
  EXPECT_EQ(seen[1].kv.value, "three");
  EXPECT_TRUE(seen[2].deleted);
  EXPECT_GT(seen[2].kv.modRevision, seen[1].kv.modRevision);  // what the mirror orders by

  // A lease that is not kept alive takes its key with it.
  auto lease = client.grantLease(1);
  ASSERT_TRUE(lease);
  ASSERT_TRUE(client.txn({}, {{store::TxnOp::Kind::kPut, key, "leased", *lease}}));
  auto ttl = client.keepAlive(*lease);
  ASSERT_TRUE(ttl);
  EXPECT_GE(*ttl, 1);
  std::this_thread::sleep_for(3s);
  EXPECT_TRUE(client.rangePrefix(url_.prefix)->kvs.empty());
  EXPECT_EQ(*client.keepAlive(*lease), 0);  // expired

  // Nobody there: an error that says what to check.
  store::EtcdClient nobody({{"127.0.0.1", 1}}, 500ms);
  auto none = nobody.rangePrefix(url_.prefix);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().toString().find("127.0.0.1:1"), std::string::npos);
  EXPECT_FALSE(none.error().hint.empty());
}

TEST_F(StoreTest, CompactedRevisionIsReportedSoTheWholePrefixIsReadAgain) {
  store::EtcdClient client({{"127.0.0.1", etcd_->port()}}, 1000ms);
  const std::string key = url_.prefix + "/services/a";
  auto first = client.txn({}, {{store::TxnOp::Kind::kPut, key, "1", 0}});
  ASSERT_TRUE(first);
  ASSERT_TRUE(client.txn({}, {{store::TxnOp::Kind::kPut, key, "2", 0}}));
  auto last = client.txn({}, {{store::TxnOp::Kind::kPut, key, "3", 0}});
  ASSERT_TRUE(last);
  ASSERT_EQ(std::system(("/usr/bin/etcdctl --endpoints " + etcd_->hostPort() + " compact " +
                         std::to_string(last->revision) + " >/dev/null")
                            .c_str()),
            0);
  auto watched = client.watch(url_.prefix, first->revision, [](int64_t, auto) {});
  ASSERT_FALSE(watched);
  EXPECT_EQ(watched.error().code, ECANCELED) << watched.error().toString();
}

TEST_F(StoreTest, TwoNodesConvergeOnOnePrefix) {
  Loop loop;
  Node a(dir_, "a", url_, loop), b(dir_, "b", url_, loop);
  ASSERT_TRUE(loop.until([&] { return a.sync->connected() && b.sync->connected(); }));

  ASSERT_TRUE(a.cp->createService(web({endpoint("10.0.2.11"), endpoint("10.0.2.12")})));
  std::optional<std::optional<ApiError>> answered;
  a.cp->afterSaved([&](std::optional<ApiError> e) { answered = e; });
  ASSERT_TRUE(loop.until([&] { return answered.has_value(); }));
  EXPECT_FALSE(answered->has_value()) << (*answered)->error;
  ASSERT_TRUE(loop.until([&] { return b.web() != nullptr && b.web()->endpoints.size() == 2; }));

  // The other way round, and a drain.
  ASSERT_TRUE(b.cp->addEndpoint("web", endpoint("10.0.2.13")));
  ASSERT_TRUE(b.cp->setEndpointWeight("web", *IpAddress::parse("10.0.2.11"), 8080, 0));
  ASSERT_TRUE(loop.until(
      [&] { return a.web()->endpoints.size() == 3 && a.web()->endpoints[0].weight == 0; }));
  EXPECT_EQ(*a.web(), *b.web());

  // Written by anyone else (here the client itself): both nodes follow.
  store::EtcdClient other(url_.endpoints);
  const std::string key = store::endpointKey(url_.prefix, "web", endpoint("10.0.2.12"));
  ASSERT_TRUE(other.txn({}, {{store::TxnOp::Kind::kDelete, key, "", 0}}));
  ASSERT_TRUE(
      loop.until([&] { return a.web()->endpoints.size() == 2 && b.web()->endpoints.size() == 2; }));
  EXPECT_EQ(*a.web(), *b.web());
}

TEST_F(StoreTest, AWriteThatCannotReachEtcdIsUndone) {
  Loop loop;
  Node a(dir_, "a", url_, loop);
  ASSERT_TRUE(loop.until([&] { return a.sync->connected(); }));
  ASSERT_TRUE(a.cp->createService(web({endpoint("10.0.2.11")})));
  ASSERT_TRUE(loop.until([&] { return a.sync->statusJson()["writes"] == 1; }));

  // etcd hangs (SIGSTOP): the node still believes it reachable for a moment, takes the change,
  // cannot write it, and goes back to the store's state.
  etcd_->stop(SIGSTOP);
  auto added = a.cp->addEndpoint("web", endpoint("10.0.2.12"));
  std::optional<std::optional<ApiError>> answered;
  std::printf("the change was %s\n", added ? "applied, then undone" : "refused up front");
  if (added) {
    EXPECT_EQ(a.web()->endpoints.size(), 2u);  // applied at once
    a.cp->afterSaved([&](std::optional<ApiError> e) { answered = e; });
    ASSERT_TRUE(loop.until([&] { return answered.has_value(); }, 10000ms));
    ASSERT_TRUE(answered->has_value()) << "a write etcd never took was answered as done";
    EXPECT_EQ((*answered)->status, 503);
  } else {
    EXPECT_EQ(added.error().status, 503);  // the ping noticed first: refused up front
  }
  ASSERT_TRUE(loop.until([&] { return a.web()->endpoints.size() == 1; }));
  ASSERT_TRUE(loop.until([&] { return !a.sync->connected(); }, 5000ms));
  auto refused = a.cp->addEndpoint("web", endpoint("10.0.2.13"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().status, 503);
  EXPECT_NE(refused.error().error.find("unreachable"), std::string::npos);
  EXPECT_EQ(a.web()->endpoints.size(), 1u);

  // Back: reconnected and resynced to what etcd holds. The unconfirmed write was queued in the
  // hung member and may have been applied after all; the node follows etcd either way.
  etcd_->resume();
  ASSERT_TRUE(loop.until([&] { return a.sync->connected(); }, 10000ms));
  store::EtcdClient direct(url_.endpoints);
  auto held = direct.rangePrefix(url_.prefix);
  ASSERT_TRUE(held);
  store::StoreMirror truth(url_.prefix);
  truth.reset(held->kvs);
  ASSERT_TRUE(loop.until([&] { return truth.services(a.node, nullptr) == std::vector{*a.web()}; }))
      << "the node does not hold what etcd holds";
  EXPECT_EQ(a.web()->endpoints.size(), held->kvs.size() - 1);  // the service key, its endpoints
  ASSERT_TRUE(a.cp->addEndpoint("web", endpoint("10.0.2.13")));
}

}  // namespace
}  // namespace meshpath
