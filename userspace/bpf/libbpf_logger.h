// libbpf_logger.h — libbpf speaks through spdlog: its warnings, infos and debug lines (verifier
// logs included) become spdlog messages of the same level, each starting "libbpf: " once (libbpf
// writes that prefix into its own messages; the logger adds it only where it is missing).
#pragma once

namespace meshpath {

// Installs the callback process-wide (libbpf_set_print). Idempotent; call once at start-up.
void installLibbpfLogger();

}  // namespace meshpath
