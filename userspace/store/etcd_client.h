// etcd_client.h — the few etcd v3 calls meshpath makes (range, txn, watch, leases), spoken as JSON
// over HTTP to etcd's own gRPC gateway (/v3/kv/range, /v3/watch, ...), which every etcd since 3.3
// serves on its client port.
//
// Written here rather than taken from a library because Debian 12 packages no C++ etcd client, and
// the alternative, gRPC with etcd's .proto files, would add a code generator, gogoproto's imports
// and a second HTTP stack for five calls; the gateway is etcd's documented, stable JSON API and
// meshd already speaks HTTP with Boost.Beast.
//
// Blocking calls with a deadline each, for a thread of its own (meshd's store thread, meshctl). An
// EtcdClient tries its endpoints in turn, starting from the one that last answered.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "result.h"

namespace boost::asio::ssl {
class context;
}

namespace meshpath::store {

struct HostPort {
  std::string host;
  uint16_t port = 2379;
  std::string toString() const { return host + ":" + std::to_string(port); }
};

// How meshd and meshctl reach a secured etcd, as etcdctl's --cacert/--cert/--key/--user: TLS
// when `caFile` is set (the members' certificates must chain to it and name the host given in
// the URL), a client certificate when `certFile` is set too, and etcd's authentication (a token
// from /v3/auth/authenticate, renewed when it expires) when `user` is set.
struct StoreSecurity {
  std::string caFile;
  std::string certFile;
  std::string keyFile;
  std::string user;
  std::string password;
  bool tls() const { return !caFile.empty(); }
};

// The command line's --store-cacert/--store-cert/--store-key/--store-user/--store-password-file,
// as meshd and meshctl register both take them (store_cli.h adds them to a CLI11 app).
struct StoreSecurityOptions {
  std::string caFile;
  std::string certFile;
  std::string keyFile;
  std::string user;
  std::string passwordFile;
};
// The StoreSecurity they describe: the password is read from its file (not a command line ps
// shows); options that do not go together (a certificate without its key, ...) are refused.
Result<StoreSecurity> storeSecurity(const StoreSecurityOptions& options);

// --store etcd://HOST:PORT[,HOST:PORT...]/PREFIX  (PREFIX defaults to /meshpath)
struct StoreUrl {
  std::vector<HostPort> endpoints;
  std::string prefix = "/meshpath";
  StoreSecurity security;  // not part of toString()
  std::string toString() const;
};
// An error names what is wrong and shows the form expected.
Result<StoreUrl> parseStoreUrl(const std::string& text);

struct KeyValue {
  std::string key;
  std::string value;
  int64_t modRevision = 0;
  int64_t lease = 0;  // 0: none
};

struct RangeResult {
  int64_t revision = 0;  // the store's revision the answer reflects
  std::vector<KeyValue> kvs;
};

struct WatchEvent {
  bool deleted = false;  // else a put
  KeyValue kv;           // for a delete: key and modRevision only
};

// One write of a transaction.
struct TxnOp {
  enum class Kind { kPut, kDelete } kind = Kind::kPut;
  std::string key;
  std::string value;  // put only
  int64_t lease = 0;  // put only; 0: none
};
// A condition of a transaction: `key`'s mod revision equals `modRevision` (0: the key is absent).
struct TxnCompare {
  std::string key;
  int64_t modRevision = 0;
};
struct TxnResult {
  bool succeeded = false;  // false: a compare failed, nothing was written
  int64_t revision = 0;
};

class EtcdClient {
 public:
  explicit EtcdClient(std::vector<HostPort> endpoints,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(2000),
                      StoreSecurity security = {});
  ~EtcdClient();

  // Every key under `prefix`, and the revision of that snapshot.
  Result<RangeResult> rangePrefix(const std::string& prefix) const;
  // All of `ops` if every compare holds, none otherwise.
  Result<TxnResult> txn(const std::vector<TxnCompare>& compares,
                        const std::vector<TxnOp>& ops) const;
  Result<int64_t> grantLease(int64_t ttlSeconds) const;  // the lease id
  // The TTL left after the refresh; 0 when the lease has expired (it is gone with its keys).
  Result<int64_t> keepAlive(int64_t leaseId) const;
  Result<void> revokeLease(int64_t leaseId) const;
  // The store's revision: a cheap call that tells whether a member answers.
  Result<int64_t> ping() const;

  // Streams every change under `prefix` from `fromRevision` on, calling `onEvents` with each batch
  // (its revision and events, in order), until `stop` is set (stopWatch), the connection breaks (an
  // error), or `fromRevision` was compacted away (an error with code ECANCELED: read the whole
  // prefix again).
  Result<void> watch(const std::string& prefix, int64_t fromRevision,
                     const std::function<void(int64_t, std::vector<WatchEvent>)>& onEvents);
  // Ends a watch() running on another thread (it returns without error).
  void stopWatch();

  const std::vector<HostPort>& endpoints() const { return endpoints_; }

 private:
  // POST `path` with a JSON body to each endpoint in turn until one answers; the answer's JSON.
  // With a user, authenticates first and again when the token has expired.
  Result<std::string> post(const std::string& path, const std::string& body) const;
  Result<std::string> exchange(const std::string& path, const std::string& body,
                               bool withToken) const;
  Result<void> authenticate() const;
  // Before any call: the TLS files loaded, and a login token when there is a user.
  Result<void> ready() const;
  std::string token() const;

  std::vector<HostPort> endpoints_;
  std::chrono::milliseconds timeout_;
  StoreSecurity security_;
  std::shared_ptr<boost::asio::ssl::context> tls_;  // null: plain HTTP
  std::string setupError_;                          // a TLS file that could not be loaded
  mutable std::mutex tokenMu_;
  mutable std::string token_;
  mutable std::atomic<size_t> preferred_{0};  // the endpoint that last answered
  std::mutex watchMu_;
  std::function<void()> cancelWatch_;  // set while a watch runs
  bool watchStopped_ = false;
};

// The key just past every key that starts with `prefix` (etcd's range_end for a prefix).
std::string prefixEnd(const std::string& prefix);

}  // namespace meshpath::store
