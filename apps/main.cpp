// The `titan` program: the command line in apps/titan.cpp (run_cli), with libtorch's backtraces off.
#include <c10/util/Logging.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "apps/commands.h"

int main(int argc, char** argv) {
  // libtorch's errors and logs carry no C++ backtrace unless asked for (a rendezvous that
  // fails would print pages of frames before our message).
  if (const char* want = std::getenv("TITAN_BACKTRACE"); !want || std::string(want) != "1")
    c10::SetStackTraceFetcher([]() -> std::string { return "(TITAN_BACKTRACE=1 prints where it happened)"; });
  return titan::apps::run_cli(std::vector<std::string>(argv + 1, argv + argc));
}
