// How the server's routes answer: a JSON body, or an error in Ollama's shape
// ({"error": "..."}) or OpenAI's ({"error": {"message", "type", "code"}}), with the HTTP status
// api::HttpStatusFor gives a Status. Shared by server.cc, openai_routes.cc and embed_routes.cc.
//
// Thread-safety: each call writes only the response it is given.
#ifndef FERRY_SERVER_REPLIES_H_
#define FERRY_SERVER_REPLIES_H_

#include <httplib.h>

#include <string_view>

#include "api/ollama.h"
#include "base/status.h"

namespace ferry::server {

inline constexpr char kJson[] = "application/json; charset=utf-8";

// 200 with `j` (invalid UTF-8 in strings replaced, never an exception).
void SendJson(httplib::Response& res, const api::Json& j);
// Ollama's error body with `status`, or with the status `s` maps to.
void SendError(httplib::Response& res, int status, std::string_view message);
void SendStatus(httplib::Response& res, const Status& s);
// OpenAI's error body with `status`, or with the status `s` maps to.
void SendOpenAIError(httplib::Response& res, int status, std::string_view message);
void SendOpenAIStatus(httplib::Response& res, const Status& s);

// A refused Submit as clients see it: a full queue (503) in Ollama's words with the reason in
// parentheses (still a 503 for HttpStatusFor); anything else unchanged.
Status SubmitFailure(const Status& s);

}  // namespace ferry::server

#endif  // FERRY_SERVER_REPLIES_H_
