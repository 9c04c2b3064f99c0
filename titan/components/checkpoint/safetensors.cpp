#include "titan/components/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>

#include "titan/common/error.h"

namespace titan::components {

namespace {

const std::pair<at::ScalarType, const char*> kDtypes[] = {
    {at::kDouble, "F64"}, {at::kFloat, "F32"}, {at::kBFloat16, "BF16"}, {at::kHalf, "F16"},
    {at::kLong, "I64"},   {at::kInt, "I32"},   {at::kShort, "I16"},     {at::kChar, "I8"},
    {at::kByte, "U8"},    {at::kBool, "BOOL"},
};

// A file descriptor closed on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot write " + path + ": " + std::strerror(errno), "check free space and permissions");
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void read_all(int fd, void* data, size_t n, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, std::min<size_t>(n, size_t{1} << 30), static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      throw Error("cannot read " + path + (r < 0 ? std::string(": ") + std::strerror(errno) : ": the file is truncated"),
                  "the file is damaged; use another checkpoint");
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

}  // namespace

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (const auto& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

std::string safetensors_dtype(at::ScalarType t) {
  for (const auto& [st, name] : kDtypes)
    if (st == t) return name;
  throw Error(std::string("safetensors cannot hold dtype ") + c10::toString(t));
}

at::ScalarType scalar_type_of(const std::string& name, const std::string& where) {
  for (const auto& [st, n] : kDtypes)
    if (name == n) return st;
  throw Error(where + ": dtype \"" + name + "\" is not one titan.cpp reads",
              "use F64, F32, BF16, F16, I64, I32, I16, I8, U8 or BOOL tensors");
}

SafetensorsFile read_safetensors_header(const std::string& path) {
  const std::string bad = "the file is damaged or not a safetensors file; use another checkpoint";
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno), "check that the file exists");
  struct stat st {};
  ::fstat(f.fd, &st);
  SafetensorsFile out;
  out.path = path;
  out.file_size = static_cast<uint64_t>(st.st_size);
  if (out.file_size < 8) throw Error(path + " is " + std::to_string(out.file_size) + " bytes: too short for a header", bad);
  unsigned char len_bytes[8];
  read_all(f.fd, len_bytes, 8, 0, path);
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | len_bytes[i];
  if (len > 100'000'000 || 8 + len > out.file_size)
    throw Error(path + ": the header length " + std::to_string(len) + " does not fit the file (" +
                    std::to_string(out.file_size) + " bytes)", bad);
  std::string text(len, '\0');
  read_all(f.fd, text.data(), len, 8, path);
  out.data_start = 8 + len;
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(path + ": the header is not JSON (" + std::string(e.what()) + ")", bad);
  }
  if (!h.is_object()) throw Error(path + ": the header is not a JSON object", bad);
  const uint64_t data_bytes = out.file_size - out.data_start;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string where = path + ": tensor \"" + it.key() + "\"";
    if (it.key() == "__metadata__") {
      if (!it->is_object()) throw Error(path + ": __metadata__ is not an object", bad);
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) throw Error(path + ": __metadata__[\"" + m.key() + "\"] is not a string", bad);
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    try {
      SafetensorsEntry e;
      e.name = it.key();
      e.dtype = scalar_type_of(it->at("dtype").get<std::string>(), where);
      uint64_t numel = 1;
      for (const auto& d : it->at("shape")) {
        const int64_t v = d.get<int64_t>();
        if (v < 0 || (v > 0 && numel > (uint64_t{1} << 50) / static_cast<uint64_t>(v)))
          throw Error(where + " has an impossible shape " + it->at("shape").dump(), bad);
        e.shape.push_back(v);
        numel *= static_cast<uint64_t>(v);
      }
      const auto& offs = it->at("data_offsets");
      e.begin = offs.at(0).get<uint64_t>();
      e.end = offs.at(1).get<uint64_t>();
      if (e.end < e.begin || e.end > data_bytes)
        throw Error(where + " lies at bytes [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                        ") but the file holds " + std::to_string(data_bytes) + " data bytes (truncated?)", bad);
      if (e.end - e.begin != numel * c10::elementSize(e.dtype))
        throw Error(where + " has " + std::to_string(e.end - e.begin) + " bytes for shape " + it->at("shape").dump(), bad);
      out.entries.push_back(std::move(e));
    } catch (const nlohmann::json::exception& ex) {
      throw Error(where + ": " + ex.what(), bad);
    }
  }
  std::sort(out.entries.begin(), out.entries.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  // Each byte belongs to one tensor at most (the format's rule): overlapping tensors would read
  // each other's bytes.
  for (size_t i = 1; i < out.entries.size(); ++i) {
    const auto& a = out.entries[i - 1];
    const auto& b = out.entries[i];
    if (b.begin < a.end && b.end > b.begin)
      throw Error(path + ": the tensors " + a.name + " (bytes [" + std::to_string(a.begin) + ", " + std::to_string(a.end) +
                      ")) and " + b.name + " (bytes [" + std::to_string(b.begin) + ", " + std::to_string(b.end) + ")) overlap",
                  bad);
  }
  return out;
}

at::Tensor read_safetensors_tensor(const SafetensorsFile& file, const SafetensorsEntry& entry) {
  at::Tensor t = at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
  read_safetensors_into(file, entry, t);
  return t;
}

void read_safetensors_into(const SafetensorsFile& file, const SafetensorsEntry& entry, at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous() && t.device().is_cpu() && t.scalar_type() == entry.dtype &&
                  static_cast<uint64_t>(t.numel()) * t.element_size() == entry.end - entry.begin,
              "read_safetensors_into: the destination does not match ", entry.name);
  const uint64_t begin = file.data_start + entry.begin, length = entry.end - entry.begin;
  constexpr uint64_t kAlign = 4096, kBlock = uint64_t{16} << 20;
  Fd f;
  // Large tensors: O_DIRECT through an aligned block (the disk's own speed, no page cache).
  if (length >= kBlock) f.fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (f.fd >= 0) {
    void* raw = nullptr;
    if (::posix_memalign(&raw, kAlign, kBlock) != 0) throw std::bad_alloc();
    std::unique_ptr<char, decltype(&std::free)> buf(static_cast<char*>(raw), &std::free);
    char* dst = static_cast<char*>(t.data_ptr());
    uint64_t pos = begin / kAlign * kAlign;  // aligned start
    while (pos < begin + length) {
      const uint64_t want = std::min(kBlock, (begin + length - pos + kAlign - 1) / kAlign * kAlign);
      ssize_t r;
      do r = ::pread(f.fd, buf.get(), want, static_cast<off_t>(pos));
      while (r < 0 && errno == EINTR);
      if (r <= 0) {
        if (r < 0 && errno == EINVAL) break;  // O_DIRECT refused after all: read below
        throw Error("cannot read " + file.path + (r < 0 ? std::string(": ") + std::strerror(errno) : ": the file is truncated"),
                    "the file is damaged; use another checkpoint");
      }
      const uint64_t lo = std::max(pos, begin), hi = std::min(pos + static_cast<uint64_t>(r), begin + length);
      if (hi > lo) std::memcpy(dst + (lo - begin), buf.get() + (lo - pos), hi - lo);
      if (static_cast<uint64_t>(r) < want && hi < begin + length)
        throw Error("cannot read " + file.path + ": the file is truncated", "the file is damaged; use another checkpoint");
      pos += static_cast<uint64_t>(r);
    }
    if (pos >= begin + length) return;
    ::close(f.fd);
    f.fd = -1;
  }
  f.fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw Error("cannot open " + file.path + ": " + std::strerror(errno), "check that the file exists");
  read_all(f.fd, t.data_ptr(), length, begin, file.path);
}

namespace {

// Streams bytes to a file through aligned blocks written with O_DIRECT, several in flight while
// the next fills: no page cache, so a checkpoint of many GB does not push the training state out
// of memory and the disk runs at its own speed. Falls back to plain writes where the file system
// refuses O_DIRECT (tmpfs).
class BlockWriter {
 public:
  static constexpr size_t kBlock = size_t{32} << 20, kAlign = 4096;
  static constexpr int kBlocks = 4;

  explicit BlockWriter(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
    if (fd_ < 0 && errno == EINVAL) {
      direct_ = false;
      fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    }
    if (fd_ < 0) throw Error("cannot write " + path + ": " + std::strerror(errno), "check that the folder is writable");
    for (auto& b : buf_) {
      void* p = nullptr;
      if (::posix_memalign(&p, kAlign, kBlock) != 0) throw std::bad_alloc();
      b = static_cast<char*>(p);
    }
  }
  ~BlockWriter() {
    for (auto& f : pending_)
      if (f.valid()) f.wait();
    for (auto* b : buf_) std::free(b);
    if (fd_ >= 0) ::close(fd_);
  }

  // Keeps a copy of the file's first `n` bytes (rounded up to the alignment) for rewrite_prefix.
  void keep_prefix(size_t n) { prefix_.reserve((n + kAlign - 1) / kAlign * kAlign); prefix_len_ = prefix_.capacity(); }

  // Replaces bytes [offset, offset + bytes.size()) of the kept prefix; written by finish().
  void rewrite_prefix(size_t offset, const std::string& bytes) {
    TORCH_CHECK(offset + bytes.size() <= prefix_.size(), "rewrite_prefix beyond the kept prefix");
    std::memcpy(prefix_.data() + offset, bytes.data(), bytes.size());
    rewrite_ = true;
  }

  void append(const void* data, size_t n) {
    if (prefix_.size() < prefix_len_)
      prefix_.insert(prefix_.end(), static_cast<const char*>(data),
                     static_cast<const char*>(data) + std::min(n, prefix_len_ - prefix_.size()));
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const size_t take = std::min(n, kBlock - fill_);
      std::memcpy(buf_[cur_] + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == kBlock) flush_block();
    }
  }

  // Writes the rest, flushes to the disk and closes. `size` is the file's exact length.
  void finish(uint64_t size) {
    if (fill_ > 0) {
      const size_t padded = direct_ ? (fill_ + kAlign - 1) / kAlign * kAlign : fill_;
      std::memset(buf_[cur_] + fill_, 0, padded - fill_);
      fill_ = padded;
      flush_block();
    }
    for (auto& f : pending_)
      if (f.valid()) f.get();
    if (rewrite_) {  // the prefix again, now final (whole aligned blocks, zero beyond the data)
      std::vector<char> pad(prefix_len_, 0);
      std::memcpy(pad.data(), prefix_.data(), prefix_.size());
      const size_t n = direct_ ? prefix_len_ : std::min<size_t>(prefix_.size(), size);
      std::memcpy(buf_[0], pad.data(), n);
      size_t done = 0;
      while (done < n) {
        const ssize_t w = ::pwrite(fd_, buf_[0] + done, n - done, static_cast<off_t>(done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) throw Error("cannot write " + path_ + ": " + std::strerror(errno), "check free space");
        done += static_cast<size_t>(w);
      }
    }
    if (direct_ && ::ftruncate(fd_, static_cast<off_t>(size)) != 0)
      throw Error("cannot write " + path_ + ": " + std::strerror(errno), "check free space");
    if (::fsync(fd_) != 0) throw Error("cannot flush " + path_ + ": " + std::strerror(errno), "check the disk");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw Error("cannot write " + path_ + ": " + std::strerror(errno), "check free space");
  }

 private:
  void flush_block() {
    const char* b = buf_[cur_];
    const size_t n = fill_;
    const uint64_t at = offset_;
    pending_[cur_] = std::async(std::launch::async, [this, b, n, at] {
      size_t done = 0;
      while (done < n) {
        const ssize_t w = ::pwrite(fd_, b + done, n - done, static_cast<off_t>(at + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) throw Error("cannot write " + path_ + ": " + std::strerror(errno), "check free space and permissions");
        done += static_cast<size_t>(w);
      }
    });
    offset_ += n;
    cur_ = (cur_ + 1) % kBlocks;
    fill_ = 0;
    if (pending_[cur_].valid()) pending_[cur_].get();  // the next block is free again (its errors surface)
  }

  std::string path_;
  int fd_ = -1;
  bool direct_ = true;
  char* buf_[kBlocks] = {};
  int cur_ = 0;
  size_t fill_ = 0;
  uint64_t offset_ = 0;
  std::future<void> pending_[kBlocks];
  std::vector<char> prefix_;
  size_t prefix_len_ = 0;
  bool rewrite_ = false;
};

}  // namespace

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata,
                       const std::function<void(uint64_t)>& after_bytes,
                       const std::function<std::map<std::string, std::string>()>& final_metadata) {
  auto header = [&](const std::map<std::string, std::string>& meta) {
    nlohmann::ordered_json h;
    if (!meta.empty()) h["__metadata__"] = meta;
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
      const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
      h[name] = {{"dtype", safetensors_dtype(t.scalar_type())}, {"shape", t.sizes().vec()},
                 {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    }
    std::string text = h.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
    return text;
  };
  const std::string text = header(metadata);
  BlockWriter w(path);
  if (final_metadata) w.keep_prefix(8 + text.size());
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((text.size() >> (8 * i)) & 0xff);
  w.append(len_bytes, 8);
  w.append(text.data(), text.size());
  uint64_t written = 0;
  for (const auto& [name, t] : tensors) {
    const at::Tensor c = t.device().is_cpu() ? t.contiguous() : t.to(at::kCPU).contiguous();
    const size_t bytes = static_cast<size_t>(c.numel()) * c.element_size();
    w.append(c.data_ptr(), bytes);
    written += bytes;
    if (after_bytes) after_bytes(written);
  }
  if (final_metadata) {
    const std::string final_text = header(final_metadata());
    TORCH_CHECK(final_text.size() == text.size(), "write_safetensors: the final header changed length");
    w.rewrite_prefix(8, final_text);
  }
  w.finish(8 + text.size() + written);
}

}  // namespace titan::components
