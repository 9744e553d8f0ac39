// store_cli.h — the etcd TLS and login options on a CLI11 command line, written once for meshd
// and `meshctl register` (etcd_client.h: StoreSecurityOptions, storeSecurity()).
#pragma once

#include <CLI/CLI.hpp>

#include "etcd_client.h"

namespace meshpath::store {

inline void addStoreSecurityOptions(CLI::App& app, StoreSecurityOptions& o) {
  app.add_option("--store-cacert", o.caFile,
                 "TLS to etcd: the CA file its members' certificates chain to");
  app.add_option("--store-cert", o.certFile, "TLS client certificate for etcd (with --store-key)");
  app.add_option("--store-key", o.keyFile, "its private key");
  app.add_option("--store-user", o.user, "etcd user (etcd's authentication)");
  app.add_option("--store-password-file", o.passwordFile,
                 "file whose first line is that user's password");
}

}  // namespace meshpath::store
