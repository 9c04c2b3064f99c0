// Checks of a whole job config before anything is built: rules that span keys (batch sizes,
// degrees, sequence length) and the list of settings that ask for features not built yet.
#pragma once

#include <string>
#include <vector>

#include "titan/config/job_config.h"

namespace titan::train {

// Throws titan::Error for the first rule a config breaks.
void validate_config(const config::JobConfig& cfg);

// One line per setting that asks for something titan.cpp does not do yet, e.g.
// "compile.enable = true: torch.compile-style compilation is not supported yet".
std::vector<std::string> unsupported_settings(const config::JobConfig& cfg);

}  // namespace titan::train
