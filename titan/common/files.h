// Whole-file reads and atomic writes, with titan::Error messages that name the file.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include "titan/common/error.h"

namespace titan {

// The bytes of `path`; `what` names the file in the message ("tokenizer.json").
inline std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + what + " " + path, "check that the file exists and is readable");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Writes `body` to `path`.tmp and renames it to `path`, so that an interrupted write never
// leaves a half file under the final name. A failed write removes the .tmp file and names the
// reason (errno: no space, permissions, ...).
inline void write_file_atomically(const std::string& path, const std::string& body) {
  const std::string tmp = path + ".tmp";
  auto fail = [&](const std::string& doing, int err, int fd) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return Error("cannot " + doing + " " + tmp + ": " + std::strerror(err),
                 err == ENOSPC || err == EDQUOT || err == EFBIG ? "free some space on that disk"
                                                                 : "check the folder's permissions");
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw fail("create", errno, -1);
  for (size_t done = 0; done < body.size();) {
    const ssize_t n = ::write(fd, body.data() + done, body.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail("write", errno, fd);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 && errno != EINVAL) throw fail("flush", errno, fd);
  if (::close(fd) != 0) throw fail("close", errno, -1);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": " + ec.message(), "choose another file name or folder");
  }
}

}  // namespace titan
