#include "api_json.h"

#include "json.h"

namespace meshpath {

namespace {

constexpr const char* kHint = "see docs/api.md for the shape of the body";

template <typename T, typename Parse>
ApiResult<T> parseBody(const std::string& body, Parse parse) {
  try {
    return parse(parseJson(body));
  } catch (const ConfigError& e) {
    return ApiError{400, e.what(), kHint};
  } catch (const nlohmann::json::exception& e) {
    return ApiError{400, std::string("body: ") + e.what(), kHint};
  }
}

}  // namespace

nlohmann::json serviceToApiJson(const ServiceSpec& service) { return toJson(service); }
nlohmann::json endpointToApiJson(const EndpointSpec& endpoint) { return toJson(endpoint); }

ApiResult<ServiceSpec> serviceFromApiJson(const std::string& body) {
  return parseBody<ServiceSpec>(body, [](const nlohmann::json& j) { return serviceFromJson(j); });
}

ApiResult<EndpointSpec> endpointFromApiJson(const std::string& body) {
  return parseBody<EndpointSpec>(body, [](const nlohmann::json& j) { return endpointFromJson(j); });
}

ApiResult<uint32_t> weightFromApiJson(const std::string& body) {
  return parseBody<uint32_t>(body, [](const nlohmann::json& j) { return weightFromJson(j); });
}

}  // namespace meshpath
