// Log lines in torchtitan's format: "[titan] <date time,ms> - root - <LEVEL> - <message>",
// on rank 0 unless asked otherwise, with ANSI colours only when the output is a terminal.
#pragma once

#include <string>

namespace titan::log {

void set_rank(int rank, bool all_ranks = false);
void set_color(bool enabled);  // also off when stdout is not a TTY
bool color_enabled();

void info(const std::string& message);
void warning(const std::string& message);
// On every rank, prefixed "rank R: ": what differs between ranks.
void info_every_rank(const std::string& message);

// ANSI colour codes as torchtitan's Color class names them ("" when colour is off).
struct Colors {
  const char *red, *green, *orange, *turquoise, *blue, *cyan, *magenta, *yellow, *reset;
};
Colors colors();

// One number with a printf format, e.g. format("%8.5f", loss).
std::string format(const char* printf_format, double value);

// "1,234,567"
std::string with_commas(long long value);

}  // namespace titan::log
