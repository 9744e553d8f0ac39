// api_json.h — request bodies of the REST API into the model, with core's JSON shapes (json.h);
// a body that does not fit becomes a 400 ApiError naming the field.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "control_plane.h"
#include "model.h"

namespace meshpath {

nlohmann::json serviceToApiJson(const ServiceSpec& service);
nlohmann::json endpointToApiJson(const EndpointSpec& endpoint);

ApiResult<ServiceSpec> serviceFromApiJson(const std::string& body);
ApiResult<EndpointSpec> endpointFromApiJson(const std::string& body);
ApiResult<uint32_t> weightFromApiJson(const std::string& body);

}  // namespace meshpath
