// A lock on a folder that one live process holds (flock on <folder>/.titan.lock, released when
// the process ends, even by a crash): two runs never write into the same job.dump_folder.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace titan {

class FolderLock {
 public:
  // Creates the folder if needed. Returns the lock, or std::nullopt with `holder` set to what
  // the holder wrote ("pid 123 on host gpu7 since 2026-12-02 13:05:01").
  static std::optional<FolderLock> try_lock(const std::string& folder, std::string* holder);
  FolderLock(FolderLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FolderLock& operator=(FolderLock&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  FolderLock(const FolderLock&) = delete;
  ~FolderLock();

 private:
  explicit FolderLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace titan
