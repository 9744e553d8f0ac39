// commands.h — meshctl's commands, one function each: a thin call to meshd's API, the answer
// printed as text (views.h) or, with -o json, as the daemon sent it. main.cpp's table maps the
// command line to them. Each returns the exit code (cli.h).
#pragma once

#include "cli.h"

namespace meshpath::meshctl {

// cmd_observe.cpp
int cmdStatus(const Context& ctx, const Args& a);
int cmdStats(const Context& ctx, const Args& a);
int cmdHealth(const Context& ctx, const Args& a);
int cmdEvents(const Context& ctx, const Args& a);

// cmd_service.cpp
int cmdServiceList(const Context& ctx, const Args& a);
int cmdServiceShow(const Context& ctx, const Args& a);
int cmdServiceAdd(const Context& ctx, const Args& a);
int cmdServiceDel(const Context& ctx, const Args& a);

// cmd_endpoint.cpp
int cmdEndpointAdd(const Context& ctx, const Args& a);
int cmdEndpointDel(const Context& ctx, const Args& a);
int cmdEndpointSetWeight(const Context& ctx, const Args& a);
int cmdEndpointDrain(const Context& ctx, const Args& a);

// cmd_register.cpp
int cmdRegister(const Context& ctx, const Args& a);

// cmd_apply.cpp
int cmdApply(const Context& ctx, const Args& a);

// cmd_upgrade.cpp
int cmdUpgrade(const Context& ctx, const Args& a);

}  // namespace meshpath::meshctl
