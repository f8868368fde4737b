// The interactive session of `ferry run MODEL` (as `ollama run`'s): a `>>> ` prompt with line
// editing and history (libedit), slash commands, `"""` multi-line input, Ctrl-C to stop a reply,
// Ctrl-D or /bye to leave. The same session drives a model loaded in this process and one
// served by `ferry serve`: the engine side is a set of hooks.
//
// Threading: the main thread only. RunSession installs a SIGINT handler for its duration (a
// flag, read by Interrupted()) and restores the previous one when it returns.
#ifndef FERRY_APPS_FERRY_INTERACTIVE_H_
#define FERRY_APPS_FERRY_INTERACTIVE_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "runtime/request.h"
#include "settings.h"

namespace ferry::app {

// What a session asks of the engine it drives.
struct SessionHooks {
  // One user turn: sends `text` and streams the reply to stdout, stopping early (and keeping
  // what was written) once Interrupted() is true.
  std::function<Status(const std::string& text)> turn;
  // /clear: forgets the conversation (the system message stays).
  std::function<void()> clear;
  // /set parameter NAME VALUE...: Ollama's parameter names and value syntax (a Modelfile's
  // PARAMETER); an error names what is wrong and changes nothing.
  std::function<Status(const std::string& name, const std::vector<std::string>& values)>
      set_parameter;
  // /set system TEXT: replaces the system message (an empty TEXT removes it).
  std::function<void(const std::string& text)> set_system;
  // /show info | parameters | template | system: the text to print.
  std::function<StatusOr<std::string>(const std::string& what)> show;
};

// True from a Ctrl-C until the next prompt is read.
bool Interrupted();

// Runs the session until /bye or end of input. Returns the exit code: 1 when any turn failed,
// else 0. `model` is the name the user gave, for the banner.
int RunSession(const Settings& settings, const std::string& model, const SessionHooks& hooks);

// One parsed line of input (exposed for tests).
struct SessionCommand {
  enum class Kind { kMessage, kHelp, kBye, kClear, kSetParameter, kSetSystem, kShow, kUsage };
  Kind kind = Kind::kMessage;
  std::string text;                 // kMessage: the message; kSetSystem: the system text;
                                    // kShow: what; kUsage: the message to print
  std::vector<std::string> values;  // kSetParameter: name, then the value words
};
SessionCommand ParseSessionLine(const std::string& line);

// Reads all of standard input (not a terminal) as one prompt. A request of `num_ctx` tokens
// cannot use more than num_ctx * kMaxPromptBytesPerToken bytes (no vocabulary ferry loads has
// a piece that long), so more input than that is refused once it is read, not held.
inline constexpr int64_t kMaxPromptBytesPerToken = 1024;
StatusOr<std::string> ReadPipedPrompt(int64_t num_ctx);

// /show info and /show parameters, the same text for a local model and a served one.
std::string FormatSessionInfo(const std::string& arch, uint64_t parameters, uint64_t context_length,
                              uint64_t embedding_length, const std::string& quantization);
std::string FormatSessionParameters(const RequestOptions& options);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_INTERACTIVE_H_
