#include "server/replies.h"

#include "api/openai.h"

namespace ferry::server {

void SendJson(httplib::Response& res, const api::Json& j) {
  res.status = 200;
  res.set_content(j.dump(-1, ' ', false, api::Json::error_handler_t::replace), kJson);
}

void SendError(httplib::Response& res, int status, std::string_view message) {
  res.status = status;
  res.set_content(api::ErrorJson(message), kJson);
}

void SendStatus(httplib::Response& res, const Status& s) {
  SendError(res, api::HttpStatusFor(s), s.message());
}

void SendOpenAIError(httplib::Response& res, int status, std::string_view message) {
  res.status = status;
  res.set_content(api::openai::ErrorJson(status, message), kJson);
}

void SendOpenAIStatus(httplib::Response& res, const Status& s) {
  SendOpenAIError(res, api::HttpStatusFor(s), s.message());
}

Status SubmitFailure(const Status& s) {
  if (s.code() == StatusCode::kResourceExhausted && api::HttpStatusFor(s) == 503) {
    return ResourceExhaustedError("{} ({})", api::kQueueFullMessage, s.message());
  }
  return s;
}

}  // namespace ferry::server
