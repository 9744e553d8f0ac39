// teardown.h — meshd --teardown: detach XDP and remove the pins and the state file of a meshd
// that is not running.
#pragma once

#include <string>

namespace meshpath {

// The node from `config` (only its node section has to make sense; "" for the defaults).
// Returns the process exit code: 0 done, 1 refused or failed (meshd still runs), 2 bad config.
int teardown(const std::string& config);

}  // namespace meshpath
