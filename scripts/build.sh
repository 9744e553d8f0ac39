#!/usr/bin/env bash
# build.sh — configure and build everything (BPF objects, meshd, meshctl, tools, tests) into
# $MESHPATH_BUILD_DIR (default ./build). Extra arguments go to the cmake configure step.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${MESHPATH_BUILD_DIR:-$ROOT/build}"

cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
