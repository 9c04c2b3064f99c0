// A small reader of Python pickles (protocols 2-5): the object tree, with classes and functions
// left as names ("module.qualname") and their calls, instances and states recorded, never run.
// Enough for PyTorch's distributed-checkpoint metadata (.metadata: dataclasses, torch.Size,
// dtypes); tensors inside torch.save archives are ATen's business.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace titan::components {

struct PyObj;
using PyRef = std::shared_ptr<PyObj>;

struct PyObj {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Set, Global, Call, PersistentId };
  Kind kind = Kind::None;
  int64_t i = 0;  // Bool, Int
  double f = 0;   // Float
  std::string s;  // Str, Bytes, Global ("module.name")
  std::vector<PyRef> items;                   // Tuple, List, Set; PersistentId: its tuple
  std::vector<std::pair<PyRef, PyRef>> dict;  // Dict
  PyRef callee, args, state;                  // Call: callee(*args) (REDUCE or NEWOBJ), then BUILD(state)

  // Helpers that throw std::runtime_error naming what was expected.
  int64_t as_int() const;
  const std::string& as_str() const;
  // The attribute `name` of an instance (its BUILD state dict, or a dataclass's slots), or null.
  PyRef attr(const std::string& name) const;
  // A tuple, list or torch.Size(...) call as integers.
  std::vector<int64_t> as_ints() const;
  bool is_call_of(std::string_view global) const;
};

// Parses `data`; std::runtime_error on anything malformed or not supported.
PyRef unpickle(std::string_view data);

}  // namespace titan::components
