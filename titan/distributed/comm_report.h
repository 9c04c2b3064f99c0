// comm_report: after a failed multi-process run, reads every rank's flight-recorder file and
// names the rank and collective that fell behind or diverged (`titan comm-report`). Torch-free:
// it reads JSON files only.
#pragma once

#include <string>

namespace titan::distributed {

// Reads the recorder files of every rank in `folder` (prefix `prefix`) and explains which rank
// fell behind or diverged, at which collective. Only files of the most recent run (the one
// dumped last) are read. Throws titan::Error when there is nothing to read or a file is malformed.
std::string comm_report(const std::string& folder, const std::string& prefix = "rank_");

}  // namespace titan::distributed
