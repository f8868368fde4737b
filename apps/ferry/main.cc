// ferry: the single binary. Subcommands parse flags here and call into the libraries; this is
// the only place that reads FERRY_* environment variables (settings.cc).
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "base/log.h"
#include "cmd_bench.h"
#include "cmd_client.h"
#include "cmd_plan.h"
#include "cmd_run.h"
#include "cmd_serve.h"
#include "cmd_show.h"
#include "cmd_store.h"
#include "settings.h"

namespace {

int Main(int argc, char** argv) {
  CLI::App app{"ferry: a local LLM server with exact, explainable memory plans", "ferry"};
  app.require_subcommand(1);
  // Every --help shows each option's default.
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", "ferry 0.1.0");
  bool debug = false;
  app.add_flag("--debug", debug, "Debug logging on stderr");

  ferry::app::ShowOptions show;
  ferry::app::AddShowCommand(app, show);
  ferry::app::RunOptions run;
  ferry::app::AddRunCommand(app, run);
  ferry::app::PerplexityOptions perplexity;
  ferry::app::AddPerplexityCommand(app, perplexity);
  ferry::app::PlanOptions plan;
  ferry::app::AddPlanCommand(app, plan);
  ferry::app::BenchOptions bench;
  ferry::app::AddBenchCommand(app, bench);
  ferry::app::ServeOptions serve;
  ferry::app::AddServeCommand(app, serve);
  ferry::app::StoreCommandOptions store;
  ferry::app::AddStoreCommands(app, store);
  ferry::app::ClientCommandOptions client;
  ferry::app::AddClientCommands(app, client);

  // ferry help [COMMAND]: the same text as --help.
  CLI::App* help = app.add_subcommand("help", "Show help for ferry or for one command");
  std::string help_topic;
  help->add_option("command", help_topic, "The command to explain");

  // An unknown command is named as such (CLI11 would only say that one is required).
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known |= sub->check_name(argv[1]);
    if (!known) {
      std::fprintf(stderr, "ferry: unknown command '%s'; run 'ferry help' for the list\n", argv[1]);
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version: printed, exit 0
  } catch (const CLI::ParseError& e) {
    // Usage errors: one exit code (2), the ferry: prefix, and where to look.
    std::fprintf(stderr, "ferry: %s\nRun 'ferry help' or 'ferry COMMAND --help' for usage.\n",
                 e.what());
    return 2;
  }
  if (app.got_subcommand(help)) {
    if (help_topic.empty()) {
      // app.help() would describe the selected subcommand (help itself).
      std::printf(
          "%s", app.get_formatter()->make_help(&app, "ferry", CLI::AppFormatMode::Normal).c_str());
      return 0;
    }
    for (const CLI::App* sub : app.get_subcommands({})) {
      if (sub->get_name() == help_topic) {
        std::printf("%s", sub->help("ferry").c_str());
        return 0;
      }
    }
    std::fprintf(stderr, "ferry: no command '%s'; run 'ferry help' for the list\n",
                 help_topic.c_str());
    return 2;
  }
  ferry::log::SetLevel(debug ? ferry::log::Level::kDebug : ferry::log::Level::kWarn);
  auto read = ferry::app::ReadSettings();
  if (!read.ok()) {
    std::fprintf(stderr, "ferry: %s\n", read.status().message().c_str());
    return 2;
  }
  const ferry::app::Settings& settings = *read;
  ferry::log::SetColor(!settings.no_color);
  if (app.got_subcommand("show")) return ferry::app::RunShow(settings, show);
  if (app.got_subcommand("run")) return ferry::app::RunRun(settings, run);
  if (app.got_subcommand("perplexity")) return ferry::app::RunPerplexity(settings, perplexity);
  if (app.got_subcommand("plan")) return ferry::app::RunPlan(settings, plan);
  if (app.got_subcommand("bench")) return ferry::app::RunBench(settings, bench);
  if (app.got_subcommand("serve")) return ferry::app::RunServe(settings, serve);
  if (int rc = 0; ferry::app::RunStoreCommand(settings, store, &rc)) return rc;
  if (int rc = 0; ferry::app::RunClientCommand(settings, client, &rc)) return rc;
  return 2;
}

// A command whose output could not be written (a full disk, /dev/full, a closed pipe) failed,
// whatever it computed: flush stdout and check it before choosing the exit code.
int CheckOutputWritten(int rc) {
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    const int err = errno;
    std::fprintf(stderr, "ferry: cannot write the output: %s\n",
                 err != 0 ? std::strerror(err) : "write error");
    return rc == 0 ? 1 : rc;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return CheckOutputWritten(Main(argc, argv));
  } catch (const std::exception& e) {
    // Libraries return Status; this only catches what third-party code might throw.
    std::fprintf(stderr, "ferry: internal error: %s\n", e.what());
    return 70;
  }
}
