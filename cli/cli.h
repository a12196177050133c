// Shared pieces of the `lineagefs` subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lineage/lineage.h"
#include "store/store.h"

namespace lfs::cli {

using json = nlohmann::json;

// Exit codes: 0 ok, 1 failure, 2 usage.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Opened {
  std::unique_ptr<Store> store;
  std::unique_ptr<lineage::Lineage> lineage;
};
Result<Opened> OpenStore(const std::string& path, bool read_only = false);

// Prints "lineagefs: <message>" to stderr and returns kExitFailure.
int Fail(const Status& s);
int Fail(const std::string& message);

std::string HumanBytes(uint64_t n);

// Registers a subcommand of `parent` taking STORE first; on invocation the
// store is opened and `body` (set by the caller, usually after adding more
// options) returns the exit code.
using Body = std::function<int(Opened&)>;
CLI::App* Cmd(CLI::App& parent, int* rc, const char* name, const char* help,
              std::shared_ptr<std::string> store, bool read_only, std::shared_ptr<Body> body);

// A progress line on stderr, only when stderr is a terminal.
class Progress {
 public:
  Progress(std::string label, uint64_t total);
  ~Progress();
  void Update(uint64_t done);

 private:
  std::string label_;
  uint64_t total_;
  bool tty_;
  int64_t last_ns_ = 0;
};

// One version from a checkpoint file or a model folder (flat): a draft that
// is committed unless req.draft; a failed import leaves nothing behind.
struct ImportRequest {
  std::string path;
  std::string model;
  std::optional<std::string> version;
  std::vector<std::string> parents;               // "model/version", all with `relation`
  std::vector<lineage::ParentSpec> parent_specs;  // with their own relations
  std::string relation = "finetune";
  std::string message, author, metadata = "{}", recipe;
  std::optional<std::string> predecessor;  // default: the model's newest version
  bool draft = false;
};
// Returns a JSON summary (model, version, files, bytes_logical, bytes_stored_new ...).
Result<json> ImportOne(lineage::Lineage& lin, const ImportRequest& req, bool quiet);

void RegisterStoreCommands(CLI::App& app, int* rc);     // init import export cat du fsck gc
void RegisterLineageCommands(CLI::App& app, int* rc);   // log show tree diff graph ...
void RegisterMountCommand(CLI::App& app, int* rc);      // mount
void RegisterWorkflowCommands(CLI::App& app, int* rc);  // test, bisect, cascade
void RegisterSyncCommands(CLI::App& app, int* rc);      // clone push pull

}  // namespace lfs::cli
