#include "interactive.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <histedit.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstring>
#include <cwchar>
#include <iostream>
#include <string_view>

#include "base/bytes.h"

namespace ferry::app {
namespace {

volatile sig_atomic_t g_interrupted = 0;
const char* g_prompt = ">>> ";

// A pipe the SIGINT handler writes a byte to. SIGINT may be delivered to any thread (the
// runner's pool threads included), so a blocked read(2) on the main thread is not reliably
// interrupted: ReadChar waits on this pipe beside standard input instead.
int g_wake[2] = {-1, -1};

void OnSigint(int) {
  g_interrupted = 1;
  if (g_wake[1] >= 0) {
    const char byte = 1;
    [[maybe_unused]] ssize_t n = ::write(g_wake[1], &byte, 1);  // a full pipe already wakes
  }
}

void DrainWakePipe() {
  char buf[64];
  while (g_wake[0] >= 0 && ::read(g_wake[0], buf, sizeof(buf)) > 0) {
  }
}

// libedit's character reader (EL_GETCFN): waits for standard input or a Ctrl-C, whichever
// comes first, and decodes the locale's multi-byte characters. Returns 1 with a character, 0 at
// end of input, -1 (errno EINTR) after a Ctrl-C, which makes el_gets return.
int ReadChar(EditLine*, wchar_t* out) {
  mbstate_t state{};
  while (true) {
    if (g_interrupted) {
      errno = EINTR;
      return -1;
    }
    struct pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {g_wake[0], POLLIN, 0}};
    if (::poll(fds, g_wake[0] >= 0 ? 2 : 1, -1) < 0 && errno != EINTR) return -1;
    if (g_wake[0] >= 0 && (fds[1].revents & POLLIN)) DrainWakePipe();
    if (g_interrupted || !(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    char c = 0;
    const ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n == 0) return 0;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -1;
    }
    const size_t k = std::mbrtowc(out, &c, 1, &state);
    if (k == static_cast<size_t>(-2)) continue;  // more bytes of this character to come
    if (k == static_cast<size_t>(-1)) {          // not valid in the locale: pass the byte on
      state = {};
      *out = static_cast<unsigned char>(c);
    }
    return 1;
  }
}

const char* PromptText(EditLine*) { return g_prompt; }

constexpr std::string_view kHelp =
    "Available Commands:\n"
    "  /set parameter NAME VALUE   Set a parameter (temperature, top_k, num_ctx, stop, ...)\n"
    "  /set system TEXT            Set the system message\n"
    "  /show info                  The model's architecture, size and context\n"
    "  /show parameters            The parameters in effect\n"
    "  /show template              The chat template\n"
    "  /show system                The system message\n"
    "  /clear                      Forget the conversation\n"
    "  /bye                        Exit (Ctrl-D too)\n"
    "  /?, /help                   This help\n"
    "\n"
    "Use \"\"\" to begin a multi-line message, and \"\"\" again to end it.\n"
    "Ctrl-C stops a reply; Up and Down recall earlier lines.\n";

std::vector<std::string> Words(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string_view TrimRight(std::string_view s) {
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// Reads lines: with libedit on a terminal (editing, history), with std::getline otherwise.
class LineReader {
 public:
  LineReader() {
    if (::isatty(STDIN_FILENO) != 1) return;
    // libedit decodes multi-byte input by the locale: UTF-8 unless the user chose otherwise.
    const char* loc = std::setlocale(LC_CTYPE, "");
    if (loc == nullptr || std::strcmp(loc, "C") == 0 || std::strcmp(loc, "POSIX") == 0) {
      std::setlocale(LC_CTYPE, "C.UTF-8");
    }
    // The prompt and the echo go to stderr, as the banner does: stdout holds only replies.
    el_ = el_init("ferry", stdin, stderr, stderr);
    if (el_ == nullptr) return;
    history_ = history_init();
    HistEvent ev;
    history(history_, &ev, H_SETSIZE, 1000);
    history(history_, &ev, H_SETUNIQUE, 1);
    el_set(el_, EL_EDITOR, "emacs");
    el_set(el_, EL_PROMPT, &PromptText);
    el_set(el_, EL_HIST, history, history_);
    el_set(el_, EL_SIGNAL, 0);  // our SIGINT handler; ReadChar reports it and el_gets returns
    el_set(el_, EL_GETCFN, &ReadChar);
    el_source(el_, nullptr);  // the user's ~/.editrc, if any
  }
  ~LineReader() {
    if (el_ != nullptr) el_end(el_);
    if (history_ != nullptr) history_end(history_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  enum class Result { kLine, kInterrupted, kEnd };

  // Reads one line (without its newline) after printing `prompt`.
  Result Read(const char* prompt, std::string* line) {
    g_prompt = prompt;
    g_interrupted = 0;
    DrainWakePipe();
    if (el_ == nullptr) {
      std::fputs(prompt, stderr);
      std::fflush(stderr);
      if (!std::getline(std::cin, *line)) {
        if (g_interrupted) {
          std::cin.clear();
          return Result::kInterrupted;
        }
        return Result::kEnd;
      }
      return Result::kLine;
    }
    int count = 0;
    errno = 0;
    const char* text = el_gets(el_, &count);
    if (text == nullptr || count <= 0) {
      if (g_interrupted || errno == EINTR) {
        std::fputs("^C\n", stderr);
        return Result::kInterrupted;
      }
      return Result::kEnd;
    }
    *line = std::string(TrimRight(std::string_view(text, count)));
    if (!line->empty()) {
      HistEvent ev;
      history(history_, &ev, H_ENTER, line->c_str());
    }
    return Result::kLine;
  }

 private:
  EditLine* el_ = nullptr;
  History* history_ = nullptr;
};

// Installs the SIGINT handler for a session's lifetime (no SA_RESTART: a blocked read returns).
class SigintScope {
 public:
  SigintScope() {
    if (::pipe2(g_wake, O_NONBLOCK | O_CLOEXEC) != 0) g_wake[0] = g_wake[1] = -1;
    struct sigaction sa {};
    sa.sa_handler = &OnSigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, &old_);
  }
  ~SigintScope() {
    sigaction(SIGINT, &old_, nullptr);
    for (int& fd : g_wake) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }
  SigintScope(const SigintScope&) = delete;
  SigintScope& operator=(const SigintScope&) = delete;

 private:
  struct sigaction old_ {};
};

}  // namespace

bool Interrupted() { return g_interrupted != 0; }

StatusOr<std::string> ReadPipedPrompt(int64_t num_ctx) {
  const uint64_t limit = static_cast<uint64_t>(std::max<int64_t>(num_ctx, 1)) *
                         static_cast<uint64_t>(kMaxPromptBytesPerToken);
  std::string text;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return UnavailableError("cannot read standard input: {}", std::strerror(errno));
    }
    if (text.size() + static_cast<size_t>(n) > limit) {
      return InvalidArgumentError(
          "the prompt does not fit: standard input holds more than {} bytes, more than num_ctx "
          "{} tokens can hold (ferry never truncates a prompt; raise --num-ctx)",
          limit, num_ctx);
    }
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

std::string FormatSessionInfo(const std::string& arch, uint64_t parameters, uint64_t context_length,
                              uint64_t embedding_length, const std::string& quantization) {
  std::string out = "  Model\n";
  out += fmt::format("    {:<20}{}\n", "architecture", arch);
  out += fmt::format("    {:<20}{}\n", "parameters", FormatCount(parameters));
  if (context_length > 0) out += fmt::format("    {:<20}{}\n", "context length", context_length);
  if (embedding_length > 0) {
    out += fmt::format("    {:<20}{}\n", "embedding length", embedding_length);
  }
  if (!quantization.empty()) out += fmt::format("    {:<20}{}\n", "quantization", quantization);
  return out;
}

std::string FormatSessionParameters(const RequestOptions& o) {
  const SamplingOptions& s = o.sampling;
  std::string out = "Parameters in effect:\n";
  auto line = [&](std::string_view name, const std::string& value) {
    out += fmt::format("  {:<20}{}\n", name, value);
  };
  line("num_ctx", std::to_string(o.num_ctx));
  line("num_predict", std::to_string(o.num_predict));
  line("num_batch", std::to_string(o.num_batch));
  line("num_thread",
       o.num_thread == 0 ? std::string("0 (all cores)") : std::to_string(o.num_thread));
  line("temperature", fmt::format("{:g}", s.temperature));
  line("top_k", std::to_string(s.top_k));
  line("top_p", fmt::format("{:g}", s.top_p));
  line("min_p", fmt::format("{:g}", s.min_p));
  line("repeat_penalty", fmt::format("{:g}", s.repeat_penalty));
  line("repeat_last_n", std::to_string(s.repeat_last_n));
  line("presence_penalty", fmt::format("{:g}", s.presence_penalty));
  line("frequency_penalty", fmt::format("{:g}", s.frequency_penalty));
  line("seed", s.seed ? std::to_string(*s.seed) : std::string("-1 (a fresh one each request)"));
  for (const std::string& stop : o.stop) {
    std::string shown;
    for (char c : stop) shown += c == '\n' ? "\\n" : c == '\t' ? "\\t" : std::string(1, c);
    line("stop", "\"" + shown + "\"");
  }
  return out;
}

SessionCommand ParseSessionLine(const std::string& line) {
  using Kind = SessionCommand::Kind;
  SessionCommand c;
  std::string_view s = line;
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  if (s.empty() || s.front() != '/') {
    c.text = line;
    return c;
  }
  const std::vector<std::string> w = Words(s);
  const std::string& cmd = w[0];
  auto usage = [&](std::string text) {
    c.kind = Kind::kUsage;
    c.text = std::move(text);
    return c;
  };
  if (cmd == "/?" || cmd == "/help") {
    c.kind = Kind::kHelp;
    return c;
  }
  if (cmd == "/bye" || cmd == "/exit") {
    c.kind = Kind::kBye;
    return c;
  }
  if (cmd == "/clear") {
    c.kind = Kind::kClear;
    return c;
  }
  if (cmd == "/set") {
    if (w.size() >= 2 && w[1] == "parameter") {
      if (w.size() < 4) return usage("Usage: /set parameter NAME VALUE");
      c.kind = Kind::kSetParameter;
      c.values.assign(w.begin() + 2, w.end());
      return c;
    }
    if (w.size() >= 2 && w[1] == "system") {
      // The rest of the line after "system", as typed (spaces kept), without enclosing quotes.
      std::string_view rest = s.substr(s.find("system") + 6);
      while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
      rest = TrimRight(rest);
      if (rest.size() >= 2 && rest.front() == '"' && rest.back() == '"') {
        rest = rest.substr(1, rest.size() - 2);
      }
      c.kind = Kind::kSetSystem;
      c.text = std::string(rest);
      return c;
    }
    return usage("Usage: /set parameter NAME VALUE | /set system TEXT");
  }
  if (cmd == "/show") {
    if (w.size() == 2 &&
        (w[1] == "info" || w[1] == "parameters" || w[1] == "template" || w[1] == "system")) {
      c.kind = Kind::kShow;
      c.text = w[1];
      return c;
    }
    return usage("Usage: /show info | parameters | template | system");
  }
  return usage("Unknown command '" + cmd + "'. Type /? for help");
}

int RunSession(const Settings& settings, const std::string& model, const SessionHooks& hooks) {
  SigintScope sigint;
  LineReader reader;
  const bool tty = ::isatty(STDERR_FILENO) == 1 && !settings.no_color;
  std::fprintf(stderr,
               tty ? "\x1b[2m%s: send a message (/? for help)\x1b[0m\n"
                   : "%s: send a message (/? for help)\n",
               model.c_str());
  bool any_failed = false;
  std::string line;
  while (true) {
    const LineReader::Result r = reader.Read(">>> ", &line);
    if (r == LineReader::Result::kEnd) break;
    if (r == LineReader::Result::kInterrupted) {
      std::fprintf(stderr, "Use Ctrl + d or /bye to exit.\n");
      continue;
    }
    // """ opens a multi-line message; a line ending in """ closes it.
    std::string_view lead = line;
    while (!lead.empty() && (lead.front() == ' ' || lead.front() == '\t')) lead.remove_prefix(1);
    if (lead.substr(0, 3) == "\"\"\"") {
      std::string text(lead.substr(3));
      bool closed = text.size() >= 3 && text.substr(text.size() - 3) == "\"\"\"";
      if (closed) text.resize(text.size() - 3);
      bool abandoned = false;
      while (!closed) {
        std::string more;
        const LineReader::Result m = reader.Read("... ", &more);
        if (m != LineReader::Result::kLine) {
          abandoned = true;
          break;
        }
        closed = more.size() >= 3 && more.substr(more.size() - 3) == "\"\"\"";
        if (closed) more.resize(more.size() - 3);
        text += (text.empty() ? "" : "\n") + more;
      }
      if (abandoned) continue;
      line = text;
      if (line.empty()) continue;
      // A multi-line message is a message even when it starts with '/'.
      Status s = hooks.turn(line);
      if (!s.ok()) {
        std::fprintf(stderr, "ferry: %s\n", s.message().c_str());
        any_failed = true;
      }
      continue;
    }
    if (lead.empty()) continue;
    const SessionCommand c = ParseSessionLine(line);
    using Kind = SessionCommand::Kind;
    switch (c.kind) {
      case Kind::kBye:
        return any_failed ? 1 : 0;
      case Kind::kHelp:
        std::fputs(kHelp.data(), stdout);
        break;
      case Kind::kUsage:
        std::printf("%s\n", c.text.c_str());
        break;
      case Kind::kClear:
        hooks.clear();
        std::printf("Cleared session context\n");
        break;
      case Kind::kSetSystem:
        hooks.set_system(c.text);
        std::printf(c.text.empty() ? "Cleared system message.\n" : "Set system message.\n");
        break;
      case Kind::kSetParameter: {
        const std::vector<std::string> values(c.values.begin() + 1, c.values.end());
        Status s = hooks.set_parameter(c.values[0], values);
        if (s.ok()) {
          std::string joined;
          for (const std::string& v : values) joined += (joined.empty() ? "" : " ") + v;
          std::printf("Set parameter '%s' to '%s'\n", c.values[0].c_str(), joined.c_str());
        } else {
          std::printf("Couldn't set parameter: %s\n", s.message().c_str());
        }
        break;
      }
      case Kind::kShow: {
        auto text = hooks.show(c.text);
        if (text.ok()) {
          std::fputs(text->c_str(), stdout);
          if (!text->empty() && text->back() != '\n') std::fputs("\n", stdout);
        } else {
          std::printf("%s\n", text.status().message().c_str());
        }
        break;
      }
      case Kind::kMessage: {
        Status s = hooks.turn(c.text);
        if (!s.ok()) {
          std::fprintf(stderr, "ferry: %s\n", s.message().c_str());
          any_failed = true;
        }
        break;
      }
    }
    std::fflush(stdout);
  }
  return any_failed ? 1 : 0;
}

}  // namespace ferry::app
