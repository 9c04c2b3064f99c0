// A progress bar on stderr for long work (converting checkpoints, training a tokenizer): what is
// done of how much, the rate and the time left. On a terminal it is redrawn in place at most ten
// times a second; otherwise (a log file) a line is written at most every 10 seconds, and at the end.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace titan {

class ProgressBar {
 public:
  // `what` names the work ("from-hf"), `unit` what is counted ("tensors", "documents").
  ProgressBar(std::string what, std::string unit)
      : what_(std::move(what)), unit_(std::move(unit)), tty_(::isatty(2) == 1), start_(Clock::now()), last_(start_) {}

  // `total` 0: unknown (no bar, no time left).
  void update(uint64_t done, uint64_t total) {
    const auto now = Clock::now();
    const bool end = total > 0 && done >= total;
    if (!end && now - last_ < (tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(10000))) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    std::string line = what_;
    if (total > 0) {
      const int width = 30, filled = static_cast<int>(width * std::min<uint64_t>(done, total) / total);
      line += " [" + std::string(filled, '=') + std::string(width - filled, ' ') + "]";
    }
    line += ' ';
    line += std::to_string(done);
    if (total > 0) {
      line += '/';
      line += std::to_string(total);
    }
    line += ' ';
    line += unit_;
    char tail[96];
    std::snprintf(tail, sizeof tail, ", %.0f %s/s, %s", rate, unit_.c_str(),
                  end ? ("done in " + duration(secs)).c_str()
                  : total > 0 && rate > 0 ? (duration(static_cast<double>(total - done) / rate) + " left").c_str()
                                          : (duration(secs) + " so far").c_str());
    line += tail;
    std::fprintf(stderr, tty_ ? "\r%s%s" : "%s%s", line.c_str(), tty_ && !end ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  static std::string duration(double s) {
    char b[32];
    if (s < 60) std::snprintf(b, sizeof b, "%.1f s", s);
    else if (s < 3600) std::snprintf(b, sizeof b, "%lld min %lld s", static_cast<long long>(s / 60),
                                     static_cast<long long>(s) % 60);
    else if (s < 86400 * 3) std::snprintf(b, sizeof b, "%.1f h", s / 3600);
    else std::snprintf(b, sizeof b, "%.0f days", s / 86400);
    return b;
  }
  std::string what_, unit_;
  bool tty_;
  Clock::time_point start_, last_;
};

}  // namespace titan
