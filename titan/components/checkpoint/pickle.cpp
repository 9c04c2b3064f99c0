#include "titan/components/checkpoint/pickle.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <map>
#include <stdexcept>

namespace titan::components {

namespace {

std::string hex_byte(unsigned op) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%02x", op & 0xffu);
  return b;
}

PyRef make(PyObj::Kind k) {
  auto o = std::make_shared<PyObj>();
  o->kind = k;
  return o;
}

class Reader {
 public:
  explicit Reader(std::string_view d) : d_(d) {}
  uint8_t byte() {
    need(1);
    return static_cast<uint8_t>(d_[pos_++]);
  }
  uint64_t le(int n) {
    need(n);
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(d_[pos_ + k]);
    pos_ += n;
    return v;
  }
  std::string bytes(uint64_t n) {
    need(n);
    std::string s(d_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::string line() {
    const size_t e = d_.find('\n', pos_);
    if (e == std::string_view::npos) throw std::runtime_error("pickle: unterminated line");
    std::string s(d_.substr(pos_, e - pos_));
    pos_ = e + 1;
    return s;
  }

 private:
  void need(uint64_t n) const {
    if (pos_ + n > d_.size()) throw std::runtime_error("pickle: truncated data");
  }
  std::string_view d_;
  size_t pos_ = 0;
};

}  // namespace

int64_t PyObj::as_int() const {
  if (kind != Kind::Int && kind != Kind::Bool) throw std::runtime_error("pickle: expected an integer");
  return i;
}

const std::string& PyObj::as_str() const {
  if (kind != Kind::Str && kind != Kind::Bytes) throw std::runtime_error("pickle: expected a string");
  return s;
}

PyRef PyObj::attr(const std::string& name) const {
  auto look = [&](const PyRef& d) -> PyRef {
    if (!d || d->kind != Kind::Dict) return nullptr;
    for (const auto& [k, v] : d->dict)
      if (k->kind == Kind::Str && k->s == name) return v;
    return nullptr;
  };
  if (!state) return nullptr;
  if (state->kind == Kind::Dict) return look(state);
  if (state->kind == Kind::Tuple && state->items.size() == 2) {  // (dict or None, slots dict)
    if (auto v = look(state->items[0])) return v;
    return look(state->items[1]);
  }
  return nullptr;
}

std::vector<int64_t> PyObj::as_ints() const {
  const PyObj* seq = this;
  if (kind == Kind::Call && args && args->kind == Kind::Tuple && args->items.size() == 1) seq = args->items[0].get();
  if (seq->kind != Kind::Tuple && seq->kind != Kind::List) throw std::runtime_error("pickle: expected a sequence of integers");
  std::vector<int64_t> out;
  for (const auto& v : seq->items) out.push_back(v->as_int());
  return out;
}

bool PyObj::is_call_of(std::string_view global) const {
  return kind == Kind::Call && callee && callee->kind == Kind::Global && callee->s == global;
}

PyRef unpickle(std::string_view data) {
  Reader r(data);
  std::vector<PyRef> stack;
  std::vector<size_t> marks;
  std::map<uint64_t, PyRef> memo;
  auto pop = [&]() {
    if (stack.empty()) throw std::runtime_error("pickle: stack underflow");
    PyRef v = stack.back();
    stack.pop_back();
    return v;
  };
  auto pop_mark = [&]() {
    if (marks.empty()) throw std::runtime_error("pickle: no mark");
    const size_t m = marks.back();
    marks.pop_back();
    std::vector<PyRef> items(stack.begin() + static_cast<std::ptrdiff_t>(m), stack.end());
    stack.resize(m);
    return items;
  };
  auto top = [&]() -> PyRef& {
    if (stack.empty()) throw std::runtime_error("pickle: stack underflow");
    return stack.back();
  };
  auto str = [&](std::string s, PyObj::Kind k) {
    PyRef o = make(k);
    o->s = std::move(s);
    stack.push_back(o);
  };
  auto integer = [&](int64_t v) {
    PyRef o = make(PyObj::Kind::Int);
    o->i = v;
    stack.push_back(o);
  };
  auto tuple = [&](std::vector<PyRef> items) {
    PyRef o = make(PyObj::Kind::Tuple);
    o->items = std::move(items);
    stack.push_back(o);
  };
  auto call = [&](PyRef callee, PyRef args) {
    PyRef o = make(PyObj::Kind::Call);
    o->callee = std::move(callee);
    o->args = std::move(args);
    stack.push_back(o);
  };
  for (;;) {
    const uint8_t op = r.byte();
    switch (op) {
      case 0x80: r.byte(); break;     // PROTO
      case 0x95: r.le(8); break;      // FRAME
      case '.': return pop();         // STOP
      case 'N': stack.push_back(make(PyObj::Kind::None)); break;
      case 0x88: case 0x89: {         // NEWTRUE, NEWFALSE
        PyRef o = make(PyObj::Kind::Bool);
        o->i = op == 0x88;
        stack.push_back(o);
        break;
      }
      case 'J': integer(static_cast<int32_t>(r.le(4))); break;  // BININT
      case 'K': integer(r.byte()); break;                        // BININT1
      case 'M': integer(static_cast<int64_t>(r.le(2))); break;   // BININT2
      case 0x8a: case 0x8b: {                                    // LONG1, LONG4
        const uint64_t n = op == 0x8a ? r.byte() : r.le(4);
        if (n > 8) throw std::runtime_error("pickle: integer wider than 64 bits");
        const std::string b = r.bytes(n);
        uint64_t v = 0;
        for (size_t k = n; k-- > 0;) v = (v << 8) | static_cast<uint8_t>(b[k]);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign
        integer(static_cast<int64_t>(v));
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        const std::string b = r.bytes(8);
        uint64_t v = 0;
        for (char c : b) v = (v << 8) | static_cast<uint8_t>(c);
        PyRef o = make(PyObj::Kind::Float);
        std::memcpy(&o->f, &v, 8);
        stack.push_back(o);
        break;
      }
      case 0x8c: str(r.bytes(r.byte()), PyObj::Kind::Str); break;    // SHORT_BINUNICODE
      case 'X': str(r.bytes(r.le(4)), PyObj::Kind::Str); break;      // BINUNICODE
      case 0x8d: str(r.bytes(r.le(8)), PyObj::Kind::Str); break;     // BINUNICODE8
      case 'C': str(r.bytes(r.byte()), PyObj::Kind::Bytes); break;   // SHORT_BINBYTES
      case 'B': str(r.bytes(r.le(4)), PyObj::Kind::Bytes); break;    // BINBYTES
      case 0x8e: str(r.bytes(r.le(8)), PyObj::Kind::Bytes); break;   // BINBYTES8
      case 'c': {                                                    // GLOBAL
        std::string module = r.line();
        str(module + "." + r.line(), PyObj::Kind::Global);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PyRef name = pop(), module = pop();
        str(module->as_str() + "." + name->as_str(), PyObj::Kind::Global);
        break;
      }
      case 0x94: memo[memo.size()] = top(); break;  // MEMOIZE
      case 'q': memo[r.byte()] = top(); break;      // BINPUT
      case 'r': memo[r.le(4)] = top(); break;       // LONG_BINPUT
      case 'h': case 'j': {                         // BINGET, LONG_BINGET
        const uint64_t k = op == 'h' ? r.byte() : r.le(4);
        auto it = memo.find(k);
        if (it == memo.end()) throw std::runtime_error("pickle: unknown memo entry");
        stack.push_back(it->second);
        break;
      }
      case '}': stack.push_back(make(PyObj::Kind::Dict)); break;
      case ']': stack.push_back(make(PyObj::Kind::List)); break;
      case ')': tuple({}); break;
      case 0x8f: stack.push_back(make(PyObj::Kind::Set)); break;  // EMPTY_SET
      case '(': marks.push_back(stack.size()); break;             // MARK
      case 't': tuple(pop_mark()); break;
      case 0x85: tuple({pop()}); break;
      case 0x86: {
        PyRef b = pop(), a = pop();
        tuple({a, b});
        break;
      }
      case 0x87: {
        PyRef c = pop(), b = pop(), a = pop();
        tuple({a, b, c});
        break;
      }
      case 's': {  // SETITEM
        PyRef v = pop(), k = pop();
        top()->dict.emplace_back(k, v);
        break;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        if (items.size() % 2) throw std::runtime_error("pickle: odd SETITEMS");
        for (size_t k = 0; k < items.size(); k += 2) top()->dict.emplace_back(items[k], items[k + 1]);
        break;
      }
      case 'a': {  // APPEND
        PyRef v = pop();
        top()->items.push_back(v);
        break;
      }
      case 'e': case 0x90: {  // APPENDS, ADDITEMS
        auto items = pop_mark();
        for (auto& v : items) top()->items.push_back(v);
        break;
      }
      case 0x91: {  // FROZENSET
        PyRef o = make(PyObj::Kind::Set);
        o->items = pop_mark();
        stack.push_back(o);
        break;
      }
      case 'R': case 0x81: {  // REDUCE, NEWOBJ
        PyRef args = pop(), callee = pop();
        call(callee, args);
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        pop();  // kwargs
        PyRef args = pop(), callee = pop();
        call(callee, args);
        break;
      }
      case 'b': {  // BUILD
        PyRef st = pop();
        top()->state = st;
        break;
      }
      case 'Q': {  // BINPERSID
        PyRef o = make(PyObj::Kind::PersistentId);
        o->items = {pop()};
        stack.push_back(o);
        break;
      }
      case '0': pop(); break;       // POP
      case '1': pop_mark(); break;  // POP_MARK
      case '2': stack.push_back(top()); break;  // DUP
      default:
        throw std::runtime_error("pickle: opcode " + hex_byte(op) + " is not supported");
    }
  }
}

}  // namespace titan::components
