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
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
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

  // TLS: the member serves https with `tls` (its certificate, key and the CA it asks client
  // certificates to chain to); the probe that waits for it uses `probeSecurity`.
  struct Tls {
    std::string cert, key, ca;
  };
  bool start(std::optional<Tls> tls = std::nullopt, store::StoreSecurity probeSecurity = {}) {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string client = (tls ? "https://" : "http://") + hostPort();
      std::string peer = "http://127.0.0.1:" + std::to_string(port_ + 1);
      std::string log = (dir_ / "etcd.log").string();
      FILE* f = std::freopen(log.c_str(), "a", stdout);
      (void)f;
      ::dup2(STDOUT_FILENO, STDERR_FILENO);
      const std::string data = (dir_ / "data").string(), cluster = "default=" + peer;
      std::vector<const char*> argv{kEtcd,          "--data-dir",
                                    data.c_str(),   "--listen-client-urls",
                                    client.c_str(), "--advertise-client-urls",
                                    client.c_str(), "--listen-peer-urls",
                                    peer.c_str(),   "--initial-advertise-peer-urls",
                                    peer.c_str(),   "--initial-cluster",
                                    cluster.c_str()};
      if (tls) {
        for (const char* a : {"--cert-file", tls->cert.c_str(), "--key-file", tls->key.c_str(),
                              "--trusted-ca-file", tls->ca.c_str(), "--client-cert-auth"}) {
          argv.push_back(a);
        }
      }
      argv.push_back(nullptr);
      ::execv(kEtcd, const_cast<char* const*>(argv.data()));
      ::_exit(127);
    }
    store::EtcdClient probe({{"127.0.0.1", port_}}, 500ms, probeSecurity);
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
  std::string logTail() const {
    std::ifstream in(dir_ / "etcd.log");
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return all.size() > 3000 ? all.substr(all.size() - 3000) : all;
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
    // MESHPATH_KEEP_TEST_DIR=1 keeps the certificates and etcd.log for a look after a failure.
    if (std::getenv("MESHPATH_KEEP_TEST_DIR") == nullptr) fs::remove_all(dir_);
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

// A secured etcd, as production runs it: TLS with client certificates, then authentication. The
// client verifies the member (its CA, the host's name in the certificate), presents its own
// certificate, and logs in with a user and password; each failure says what failed.
TEST_F(StoreTest, TlsClientCertificatesAndAuthentication) {
  if (std::system("command -v openssl >/dev/null") != 0) GTEST_SKIP() << "openssl not installed";
  etcd_.reset();  // this test's member serves TLS
  fs::remove_all(dir_ / "data");
  const std::string d = dir_.string();
  auto sh = [&](const std::string& cmd) {
    ASSERT_EQ(std::system(("cd " + d + " && " + cmd + " >/dev/null 2>&1").c_str()), 0) << cmd;
  };
  auto issue = [&](const std::string& ca, const std::string& name, const std::string& subject,
                   const std::string& san) {
    sh("openssl req -newkey rsa:2048 -nodes -keyout " + name + ".key -out " + name + ".csr -subj " +
       subject);
    std::ofstream(dir_ / (name + ".ext")) << "subjectAltName=" << san << "\n";
    sh("openssl x509 -req -in " + name + ".csr -CA " + ca + ".crt -CAkey " + ca +
       ".key -CAcreateserial -out " + name + ".crt -days 1 -extfile " + name + ".ext");
  };
  for (const char* ca : {"ca", "other-ca"}) {
    sh(std::string("openssl req -x509 -newkey rsa:2048 -nodes -keyout ") + ca + ".key -out " + ca +
       ".crt -days 1 -subj /CN=" + ca);
  }
  issue("ca", "server", "/CN=etcd", "IP:127.0.0.1");
  issue("ca", "client", "/CN=meshd", "DNS:meshd");
  // etcd's gateway refuses a login from a certificate with a CommonName (it would be a user of
  // its own): with authentication, the client's certificate has none.
  issue("ca", "anon", "/O=meshpath", "DNS:meshd");
  store::StoreSecurity good{d + "/ca.crt", d + "/client.crt", d + "/client.key", "", ""};
  etcd_ = std::make_unique<Etcd>(dir_);
  ASSERT_TRUE(etcd_->start(Etcd::Tls{d + "/server.crt", d + "/server.key", d + "/ca.crt"}, good))
      << "etcd did not start with TLS:\n"
      << etcd_->logTail();
  const std::vector<store::HostPort> at{{"127.0.0.1", etcd_->port()}};
  const std::string key = url_.prefix + "/services/a";

  store::EtcdClient client(at, 2000ms, good);
  auto put = client.txn({}, {{store::TxnOp::Kind::kPut, key, "over tls", 0}});
  ASSERT_TRUE(put) << put.error().toString();
  auto range = client.rangePrefix(url_.prefix);
  ASSERT_TRUE(range);
  EXPECT_EQ(range->kvs.at(0).value, "over tls");
  std::vector<store::WatchEvent> seen;
  auto watched = client.watch(url_.prefix, put->revision, [&](int64_t, auto events) {
    seen = events;
    client.stopWatch();  // from inside: the watch ends after this batch
  });
  EXPECT_TRUE(watched) << watched.error().toString();
  ASSERT_EQ(seen.size(), 1u);

  auto fails = [&](store::StoreSecurity s, const std::string& why) {
    store::EtcdClient c(at, 1000ms, s);
    auto r = c.rangePrefix(url_.prefix);
    EXPECT_FALSE(r) << why;
    return r ? std::string() : r.error().toString();
  };
  EXPECT_NE(fails({d + "/other-ca.crt", d + "/client.crt", d + "/client.key", "", ""},
                  "a member whose certificate does not chain to the CA given")
                .find("certificate verify failed"),
            std::string::npos);
  fails({d + "/ca.crt", "", "", "", ""}, "no client certificate for a member that asks for one");
  fails({}, "plain HTTP to a TLS member");
  store::EtcdClient badFile(at, 1000ms, {d + "/missing.crt", "", "", "", ""});
  auto r = badFile.rangePrefix(url_.prefix);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().toString().find("missing.crt"), std::string::npos) << r.error().toString();

  // Authentication on: a user and password (over the same TLS) are needed, and enough.
  const std::string ctl = "ETCDCTL_API=3 /usr/bin/etcdctl --endpoints https://" +
                          etcd_->hostPort() + " --cacert ca.crt --cert client.crt --key client.key";
  sh(ctl + " user add root:s3cret");
  sh(ctl + " auth enable");
  store::StoreSecurity withUser{d + "/ca.crt", d + "/anon.crt", d + "/anon.key", "root", ""};
  withUser.password = "s3cret";
  store::EtcdClient authed(at, 2000ms, withUser);
  auto again = authed.txn({}, {{store::TxnOp::Kind::kPut, key, "as root", 0}});
  ASSERT_TRUE(again) << again.error().toString();
  EXPECT_TRUE(again->succeeded);
  const std::string noUser =
      fails({d + "/ca.crt", d + "/anon.crt", d + "/anon.key", "", ""}, "no user, auth on");
  EXPECT_NE(noUser.find("permission denied"), std::string::npos) << noUser;
  store::StoreSecurity wrong = withUser;
  wrong.password = "guess";
  EXPECT_NE(fails(wrong, "a wrong password").find("authentication failed"), std::string::npos);
  sh(ctl + " --user root:s3cret auth disable");
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
