// apply_view.h — POST /v1/apply's answers for people: the diff's lines of an apply or a dry run,
// and a refusal's problems and differing node fields. Pure functions of meshd's JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace meshpath::meshctl {

// "applied FILE: 2 changes" (or "dry run of FILE: 2 changes, nothing applied"), then the diff's
// lines, indented.
std::string applyText(const nlohmann::json& body, const std::string& source);
// A refused apply's problems (when more than one) and the node fields that differ, or "".
std::string applyRefusalDetails(const nlohmann::json& body);

}  // namespace meshpath::meshctl
