#include "titan/common/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace titan::log {

namespace {
int g_rank = 0;
bool g_all_ranks = false;
bool g_color = true;

void emit(const char* level, const std::string& message, bool every_rank = false) {
  if (g_rank != 0 && !g_all_ranks && !every_rank) return;
  using namespace std::chrono;
  auto now = system_clock::now();
  std::time_t t = system_clock::to_time_t(now);
  const int ms = static_cast<int>(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
  std::printf("[titan] %s,%03d - root - %s - %s\n", stamp, ms, level, message.c_str());
  std::fflush(stdout);
}
}  // namespace

void set_rank(int rank, bool all_ranks) {
  g_rank = rank;
  g_all_ranks = all_ranks;
}

void set_color(bool enabled) { g_color = enabled; }
bool color_enabled() { return g_color && isatty(STDOUT_FILENO); }

void info(const std::string& message) { emit("INFO", message); }
void warning(const std::string& message) { emit("WARNING", message); }
void info_every_rank(const std::string& message) { emit("INFO", "rank " + std::to_string(g_rank) + ": " + message, true); }

Colors colors() {
  if (!color_enabled()) return {"", "", "", "", "", "", "", "", ""};
  return {"\033[31m", "\033[32m", "\033[33m", "\033[36m", "\033[34m", "\033[96m", "\033[35m", "\033[93m", "\033[39m"};
}

std::string format(const char* printf_format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), printf_format, value);
  return buf;
}

std::string with_commas(long long v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

}  // namespace titan::log
