// `ferry plan`: the memory plan of a model for given options and devices, without loading it.
#ifndef FERRY_APPS_FERRY_CMD_PLAN_H_
#define FERRY_APPS_FERRY_CMD_PLAN_H_

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "settings.h"

namespace ferry::app {

struct PlanOptions {
  std::string model;
  std::string ctx = "2048";  // one value or a comma-separated sweep
  int parallel = 1;
  int64_t batch = 512;
  std::string kv_type = "f16";
  int num_gpu = -1;
  int main_gpu = 0;
  std::string devices;       // described devices (when devices_given), else this machine's
  bool devices_given = false;  // --devices was given (an empty value is an error)
  std::string gpu_memory;    // cap per GPU
  int num_thread = 0;        // CPU threads decode would use (calibration); 0: all cores
  bool json = false;
  bool layers = false;       // also print one row per layer
};

void AddPlanCommand(CLI::App& app, PlanOptions& options);
int RunPlan(const Settings& settings, const PlanOptions& options);

}  // namespace ferry::app

#endif  // FERRY_APPS_FERRY_CMD_PLAN_H_
