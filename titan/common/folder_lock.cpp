#include "titan/common/folder_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "titan/common/error.h"
#include "titan/common/log.h"

namespace titan {

std::optional<FolderLock> FolderLock::try_lock(const std::string& folder, std::string* holder) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec)  // the reason is the folder's (a read-only parent), not the lock file's
    throw Error("cannot create the folder " + folder + ": " + ec.message(),
                "choose a job.dump_folder (and checkpoint.folder) where this user may write");
  const std::string path = (std::filesystem::path(folder) / ".titan.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error("cannot create " + path + ": " + std::strerror(errno), "check that job.dump_folder is writable");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[512] = {};
    const ssize_t got = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK)
      throw Error("cannot lock " + path + ": " + std::strerror(err), "use a job.dump_folder on a local or NFS disk");
    std::string who(buf, got > 0 ? static_cast<size_t>(got) : 0);
    while (!who.empty() && (who.back() == '\n' || who.back() == '\0')) who.pop_back();
    if (holder) *holder = who.empty() ? "a process that wrote no name" : who;
    return std::nullopt;
  }
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char when[32];
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
  const std::string me = "pid " + std::to_string(::getpid()) + " on host " + host + " since " + when + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    // The lock holds even if the note could not be written; a second run is then told only
    // that the folder is in use.
    log::warning("cannot write " + path + ": " + std::strerror(errno) + " (the lock holds; free some space on that disk)");
  return FolderLock(fd);
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

}  // namespace titan
