#include "titan/components/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
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
  return out;
}

at::Tensor read_safetensors_tensor(const SafetensorsFile& file, const SafetensorsEntry& entry) {
  at::Tensor t = at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
  Fd f;
  f.fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw Error("cannot open " + file.path + ": " + std::strerror(errno), "check that the file exists");
  read_all(f.fd, t.data_ptr(), entry.end - entry.begin, file.data_start + entry.begin, file.path);
  return t;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata,
                       const std::function<void(uint64_t)>& after_bytes) {
  nlohmann::ordered_json h;
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    h[name] = {{"dtype", safetensors_dtype(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  Fd f;
  f.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f.fd < 0) throw Error("cannot write " + path + ": " + std::strerror(errno), "check that the folder is writable");
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((text.size() >> (8 * i)) & 0xff);
  write_all(f.fd, len_bytes, 8, path);
  write_all(f.fd, text.data(), text.size(), path);
  uint64_t written = 0;
  for (const auto& [name, t] : tensors) {
    const at::Tensor c = t.device().is_cpu() ? t.contiguous() : t.to(at::kCPU).contiguous();
    const size_t bytes = static_cast<size_t>(c.numel()) * c.element_size();
    write_all(f.fd, c.data_ptr(), bytes, path);
    written += bytes;
    if (after_bytes) after_bytes(written);
  }
  if (::fsync(f.fd) != 0) throw Error("cannot flush " + path + ": " + std::strerror(errno), "check the disk");
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) throw Error("cannot write " + path + ": " + std::strerror(errno), "check free space");
}

}  // namespace titan::components
