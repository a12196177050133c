#include "store/formats/torch_zip.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "store/formats/npy.h"
#include "store/formats/zip.h"

namespace lfs::formats {
namespace {

std::string Quote(std::string_view s) { return QuoteForLog(s); }

Status Corrupt(const std::string& why) { return Status::Corruption("torch pickle: " + why); }
Status Refuse(const std::string& why) { return Status::Unsupported("torch pickle: " + why); }

// ---------------------------------------------------------------------------
// Restricted unpickler.
//
// Objects live in typed arenas and are referred to by index, which gives
// Python's reference semantics (a memoized list fetched twice is one list)
// without pointers. Nothing is ever called: the few allowed globals are
// recognised by name and "calling" them only builds our own records.

namespace op {
constexpr uint8_t kMark = '(';
constexpr uint8_t kStop = '.';
constexpr uint8_t kBinFloat = 'G';
constexpr uint8_t kBinInt = 'J';
constexpr uint8_t kBinInt1 = 'K';
constexpr uint8_t kBinInt2 = 'M';
constexpr uint8_t kNone = 'N';
constexpr uint8_t kBinPersId = 'Q';
constexpr uint8_t kReduce = 'R';
constexpr uint8_t kBinString = 'T';
constexpr uint8_t kShortBinString = 'U';
constexpr uint8_t kBinUnicode = 'X';
constexpr uint8_t kAppend = 'a';
constexpr uint8_t kBuild = 'b';
constexpr uint8_t kGlobal = 'c';
constexpr uint8_t kDict = 'd';
constexpr uint8_t kAppends = 'e';
constexpr uint8_t kBinGet = 'h';
constexpr uint8_t kLongBinGet = 'j';
constexpr uint8_t kList = 'l';
constexpr uint8_t kBinPut = 'q';
constexpr uint8_t kLongBinPut = 'r';
constexpr uint8_t kSetItem = 's';
constexpr uint8_t kTuple = 't';
constexpr uint8_t kSetItems = 'u';
constexpr uint8_t kEmptyDict = '}';
constexpr uint8_t kEmptyList = ']';
constexpr uint8_t kEmptyTuple = ')';
constexpr uint8_t kProto = 0x80;
constexpr uint8_t kNewObj = 0x81;
constexpr uint8_t kTuple1 = 0x85;
constexpr uint8_t kTuple2 = 0x86;
constexpr uint8_t kTuple3 = 0x87;
constexpr uint8_t kNewTrue = 0x88;
constexpr uint8_t kNewFalse = 0x89;
constexpr uint8_t kLong1 = 0x8a;
constexpr uint8_t kShortBinUnicode = 0x8c;
constexpr uint8_t kBinUnicode8 = 0x8d;
constexpr uint8_t kStackGlobal = 0x93;
constexpr uint8_t kMemoize = 0x94;
constexpr uint8_t kFrame = 0x95;
}  // namespace op

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kBigInt,  // LONG1 wider than 64 bits: kept only as an opaque leaf
  kFloat,   // a leaf: its value never matters
  kStr,
  kList,
  kTuple,
  kDict,
  kFunc,         // an allowed callable
  kStorageType,  // torch.FloatStorage etc.
  kDTypeObj,     // torch.float32 etc.: a leaf
  kStorage,
  kTensor,
};

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kBigInt: return "big int";
    case Kind::kFloat: return "float";
    case Kind::kStr: return "str";
    case Kind::kList: return "list";
    case Kind::kTuple: return "tuple";
    case Kind::kDict: return "dict";
    case Kind::kFunc: return "function";
    case Kind::kStorageType: return "storage class";
    case Kind::kDTypeObj: return "dtype";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

enum class Func : uint8_t {
  kOrderedDict,
  kRebuildTensorV2,
  kRebuildParameter,
  kRebuildParameterWithState,
  kParameter,
};

// kBool/kInt: i. kStorageType: i holds the DType.
// kFunc: ref holds the Func. Arena kinds: ref indexes the arena.
struct Value {
  Kind kind = Kind::kNone;
  uint32_t ref = 0;
  int64_t i = 0;
};

struct Storage {
  DType dtype = DType::kUnknown;
  std::string key;
  int64_t numel = 0;
};

struct Tensor {
  uint32_t storage = 0;
  int64_t storage_offset = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
};

struct Heap {
  std::vector<std::string> strs;
  std::vector<std::vector<Value>> seqs;  // lists and tuples
  std::vector<std::vector<std::pair<Value, Value>>> dicts;
  std::vector<Storage> storages;
  std::vector<Tensor> tensors;
  std::unordered_map<std::string, uint32_t> storage_by_key;

  size_t Objects() const {
    return strs.size() + seqs.size() + dicts.size() + storages.size() + tensors.size();
  }
};

// The dtypes torch pickles by name (str(torch.float32) == "torch.float32").
// They are inert leaves; newer checkpoints keep them in config dicts.
bool IsTorchDTypeName(std::string_view n) {
  static constexpr std::string_view kNames[] = {
      "float64",   "float32",   "float16",    "bfloat16", "float8_e4m3fn", "float8_e5m2",
      "complex32", "complex64", "complex128", "int64",    "int32",         "int16",
      "int8",      "uint64",    "uint32",     "uint16",   "uint8",         "bool"};
  return std::find(std::begin(kNames), std::end(kNames), n) != std::end(kNames);
}

class Unpickler {
 public:
  // The arenas may grow to kMemoryPerInputByte times the pickle's size (plus
  // a floor), counted as an estimate of heap bytes. torch.save pickles
  // measured 11x (long parameter names) to 16x (20000 tensors named by
  // index); one-byte opcodes that each make an object (EMPTY_TUPLE, MEMOIZE)
  // would otherwise reach ~50x.
  static constexpr uint64_t kMemoryPerInputByte = 32;
  static constexpr uint64_t kMemoryFloor = 1 << 20;
  // Values on the stack at once: torch batches container items by 1000.
  static constexpr size_t kMaxStack = 1 << 20;
  static constexpr size_t kMaxGlobalLine = 256;

  Unpickler(std::string_view data, const ParseLimits& lim)
      : in_(data), lim_(lim), budget_(kMemoryFloor + kMemoryPerInputByte * data.size()) {}

  Result<Value> Load();
  Heap& heap() { return heap_; }

 private:
  Status Step(uint8_t code);

  // Input.
  Result<std::string_view> Take(uint64_t n) {
    if (n > in_.size() - pos_) {
      return Corrupt("truncated: needs " + std::to_string(n) + " bytes at offset " +
                     std::to_string(pos_));
    }
    std::string_view s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  Result<uint64_t> TakeLE(size_t n) {
    LFS_ASSIGN_OR_RETURN(std::string_view b, Take(n));
    uint64_t v = 0;
    for (size_t k = n; k-- > 0;) v = (v << 8) | static_cast<unsigned char>(b[k]);
    return v;
  }
  Result<std::string_view> TakeLine() {
    const size_t end = in_.find('\n', pos_);
    if (end == std::string_view::npos || end - pos_ > kMaxGlobalLine) {
      return Corrupt("GLOBAL operand at offset " + std::to_string(pos_) +
                     " is unterminated or too long");
    }
    std::string_view s = in_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  // Memory accounting. An element of a growing vector (our arenas, the memo)
  // may cost up to twice its size.
  template <typename T>
  static constexpr uint64_t Slot() {
    return 2 * sizeof(T);
  }
  Status Charge(uint64_t bytes) {
    used_ += bytes;
    if (used_ > budget_) {
      return Corrupt("needs more than " + std::to_string(budget_) + " bytes of memory for a " +
                     std::to_string(in_.size()) + "-byte pickle");
    }
    return Status::OK();
  }

  // Stack. Marks are stack heights; pops may not cross the innermost mark.
  Status Push(Value v) {
    if (stack_.size() >= kMaxStack)
      return Corrupt("stack exceeds " + std::to_string(kMaxStack) + " values");
    stack_.push_back(v);
    return Status::OK();
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Result<Value> Pop() {
    if (stack_.size() <= Floor())
      return Corrupt("stack underflow at offset " + std::to_string(pos_));
    Value v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Result<Value*> Top() {
    if (stack_.size() <= Floor())
      return Corrupt("stack underflow at offset " + std::to_string(pos_));
    return &stack_.back();
  }
  Result<std::vector<Value>> PopMark() {
    if (marks_.empty()) return Corrupt("no MARK to pop at offset " + std::to_string(pos_));
    std::vector<Value> items(stack_.begin() + static_cast<ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }

  // Object construction.
  Result<Value> NewStr(std::string_view s) {
    LFS_RETURN_IF_ERROR(Charge(Slot<std::string>() + s.size()));
    heap_.strs.emplace_back(s);
    return Value{Kind::kStr, static_cast<uint32_t>(heap_.strs.size() - 1), 0};
  }
  Result<Value> NewSeq(Kind kind, std::vector<Value> items) {
    LFS_RETURN_IF_ERROR(Charge(Slot<std::vector<Value>>() + items.size() * sizeof(Value)));
    heap_.seqs.push_back(std::move(items));
    return Value{kind, static_cast<uint32_t>(heap_.seqs.size() - 1), 0};
  }
  Result<Value> NewDict() {
    LFS_RETURN_IF_ERROR(Charge(Slot<std::vector<std::pair<Value, Value>>>()));
    heap_.dicts.emplace_back();
    return Value{Kind::kDict, static_cast<uint32_t>(heap_.dicts.size() - 1), 0};
  }
  Status AddItems(Value dict, const std::vector<Value>& kv) {
    if (dict.kind != Kind::kDict)
      return Corrupt(std::string("SETITEM on a ") + KindName(dict.kind));
    if (kv.size() % 2 != 0) return Corrupt("odd number of dict items");
    LFS_RETURN_IF_ERROR(Charge(kv.size() * sizeof(Value)));
    auto& d = heap_.dicts[dict.ref];
    for (size_t k = 0; k < kv.size(); k += 2) d.emplace_back(kv[k], kv[k + 1]);
    return Status::OK();
  }
  Status Extend(Value list, const std::vector<Value>& items) {
    if (list.kind != Kind::kList) return Corrupt(std::string("APPEND to a ") + KindName(list.kind));
    LFS_RETURN_IF_ERROR(Charge(items.size() * sizeof(Value)));
    auto& l = heap_.seqs[list.ref];
    l.insert(l.end(), items.begin(), items.end());
    return Status::OK();
  }

  Result<Value> String(uint64_t len) {
    LFS_ASSIGN_OR_RETURN(std::string_view s, Take(len));
    return NewStr(s);
  }
  Result<Value> Resolve(std::string_view module, std::string_view name);
  Result<Value> Call(Value fn, Value args);
  Result<Value> RebuildTensor(const std::vector<Value>& a);
  Result<Value> PersistentLoad(Value pid);
  Result<std::vector<int64_t>> IntTuple(Value v, const char* what);

  std::string_view in_;
  size_t pos_ = 0;
  const ParseLimits& lim_;
  const uint64_t budget_;
  uint64_t used_ = 0;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::vector<Value> memo_;
  Heap heap_;
  bool stopped_ = false;
  Value result_;
};

Result<Value> Unpickler::Load() {
  while (!stopped_) {
    if (pos_ >= in_.size()) return Corrupt("ends without STOP");
    const uint8_t code = static_cast<uint8_t>(in_[pos_++]);
    LFS_RETURN_IF_ERROR(Step(code));
  }
  return result_;
}

Status Unpickler::Step(uint8_t code) {
  switch (code) {
    case op::kProto: {
      LFS_ASSIGN_OR_RETURN(uint64_t v, TakeLE(1));
      if (v > 5) return Refuse("pickle protocol " + std::to_string(v));
      return Status::OK();
    }
    case op::kFrame: {
      // Framing only groups opcodes for buffered reads; it has no meaning here.
      LFS_ASSIGN_OR_RETURN(uint64_t n, TakeLE(8));
      if (n > in_.size() - pos_)
        return Corrupt("frame of " + std::to_string(n) + " bytes is truncated");
      return Status::OK();
    }
    case op::kStop: {
      LFS_ASSIGN_OR_RETURN(result_, Pop());
      stopped_ = true;
      return Status::OK();
    }
    case op::kMark:
      if (marks_.size() >= lim_.max_pickle_depth) {
        return Corrupt("MARKs nest deeper than " + std::to_string(lim_.max_pickle_depth));
      }
      marks_.push_back(stack_.size());
      return Status::OK();

    // Constants.
    case op::kNone: return Push(Value{Kind::kNone, 0, 0});
    case op::kNewTrue: return Push(Value{Kind::kBool, 0, 1});
    case op::kNewFalse: return Push(Value{Kind::kBool, 0, 0});
    case op::kBinInt: {
      LFS_ASSIGN_OR_RETURN(uint64_t v, TakeLE(4));
      return Push(Value{Kind::kInt, 0, static_cast<int32_t>(static_cast<uint32_t>(v))});
    }
    case op::kBinInt1:
    case op::kBinInt2: {
      LFS_ASSIGN_OR_RETURN(uint64_t v, TakeLE(code == op::kBinInt1 ? 1 : 2));
      return Push(Value{Kind::kInt, 0, static_cast<int64_t>(v)});
    }
    case op::kLong1: {
      // Little-endian two's complement of n bytes.
      LFS_ASSIGN_OR_RETURN(uint64_t n, TakeLE(1));
      LFS_ASSIGN_OR_RETURN(std::string_view b, Take(n));
      if (n > 8) return Push(Value{Kind::kBigInt, 0, 0});
      uint64_t v = 0;
      for (size_t k = n; k-- > 0;) v = (v << 8) | static_cast<unsigned char>(b[k]);
      if (n > 0 && n < 8 && (static_cast<unsigned char>(b[n - 1]) & 0x80))
        v |= ~uint64_t{0} << (8 * n);
      return Push(Value{Kind::kInt, 0, static_cast<int64_t>(v)});
    }
    case op::kBinFloat: {
      LFS_RETURN_IF_ERROR(Take(8).status());
      return Push(Value{Kind::kFloat, 0, 0});
    }
    case op::kBinUnicode:
    case op::kShortBinUnicode:
    case op::kBinUnicode8:
    case op::kShortBinString: {
      const size_t width = code == op::kBinUnicode ? 4 : code == op::kBinUnicode8 ? 8 : 1;
      LFS_ASSIGN_OR_RETURN(uint64_t len, TakeLE(width));
      LFS_ASSIGN_OR_RETURN(Value s, String(len));
      return Push(s);
    }
    case op::kBinString: {
      // Python 2 str; torch.load decodes it as UTF-8. The length is signed.
      LFS_ASSIGN_OR_RETURN(uint64_t len, TakeLE(4));
      if (len & 0x80000000u) return Corrupt("negative BINSTRING length");
      LFS_ASSIGN_OR_RETURN(Value s, String(len));
      return Push(s);
    }

    // Containers.
    case op::kEmptyDict: {
      LFS_ASSIGN_OR_RETURN(Value d, NewDict());
      return Push(d);
    }
    case op::kEmptyList:
    case op::kEmptyTuple: {
      LFS_ASSIGN_OR_RETURN(Value l,
                           NewSeq(code == op::kEmptyList ? Kind::kList : Kind::kTuple, {}));
      return Push(l);
    }
    case op::kTuple1:
    case op::kTuple2:
    case op::kTuple3: {
      const size_t n = code - op::kTuple1 + 1;
      if (stack_.size() < Floor() + n)
        return Corrupt("stack underflow at offset " + std::to_string(pos_));
      std::vector<Value> items(stack_.end() - static_cast<ptrdiff_t>(n), stack_.end());
      stack_.resize(stack_.size() - n);
      LFS_ASSIGN_OR_RETURN(Value t, NewSeq(Kind::kTuple, std::move(items)));
      return Push(t);
    }
    case op::kTuple:
    case op::kList: {
      LFS_ASSIGN_OR_RETURN(std::vector<Value> items, PopMark());
      LFS_ASSIGN_OR_RETURN(
          Value t, NewSeq(code == op::kTuple ? Kind::kTuple : Kind::kList, std::move(items)));
      return Push(t);
    }
    case op::kDict: {
      LFS_ASSIGN_OR_RETURN(std::vector<Value> items, PopMark());
      LFS_ASSIGN_OR_RETURN(Value d, NewDict());
      LFS_RETURN_IF_ERROR(AddItems(d, items));
      return Push(d);
    }
    case op::kAppend: {
      LFS_ASSIGN_OR_RETURN(Value v, Pop());
      LFS_ASSIGN_OR_RETURN(Value * list, Top());
      return Extend(*list, {v});
    }
    case op::kAppends: {
      LFS_ASSIGN_OR_RETURN(std::vector<Value> items, PopMark());
      LFS_ASSIGN_OR_RETURN(Value * list, Top());
      return Extend(*list, items);
    }
    case op::kSetItem: {
      LFS_ASSIGN_OR_RETURN(Value v, Pop());
      LFS_ASSIGN_OR_RETURN(Value k, Pop());
      LFS_ASSIGN_OR_RETURN(Value * dict, Top());
      return AddItems(*dict, {k, v});
    }
    case op::kSetItems: {
      LFS_ASSIGN_OR_RETURN(std::vector<Value> items, PopMark());
      LFS_ASSIGN_OR_RETURN(Value * dict, Top());
      return AddItems(*dict, items);
    }

    // Memo.
    case op::kBinPut:
    case op::kLongBinPut:
    case op::kMemoize: {
      uint64_t idx = memo_.size();
      if (code != op::kMemoize) {
        LFS_ASSIGN_OR_RETURN(idx, TakeLE(code == op::kBinPut ? 1 : 4));
      }
      // Picklers number memo entries 0, 1, 2, ... (Python's uses len(memo));
      // refusing gaps keeps the memo a dense array a hostile index cannot blow up.
      if (idx > memo_.size()) return Corrupt("memo index " + std::to_string(idx) + " leaves a gap");
      LFS_ASSIGN_OR_RETURN(Value * top, Top());
      if (idx == memo_.size()) {
        LFS_RETURN_IF_ERROR(Charge(Slot<Value>()));
        memo_.push_back(*top);
      } else {
        memo_[idx] = *top;
      }
      return Status::OK();
    }
    case op::kBinGet:
    case op::kLongBinGet: {
      LFS_ASSIGN_OR_RETURN(uint64_t idx, TakeLE(code == op::kBinGet ? 1 : 4));
      if (idx >= memo_.size())
        return Corrupt("memo entry " + std::to_string(idx) + " is not defined");
      return Push(memo_[idx]);
    }

    // Globals and calls.
    case op::kGlobal: {
      LFS_ASSIGN_OR_RETURN(std::string_view module, TakeLine());
      LFS_ASSIGN_OR_RETURN(std::string_view name, TakeLine());
      LFS_ASSIGN_OR_RETURN(Value g, Resolve(module, name));
      return Push(g);
    }
    case op::kStackGlobal: {
      LFS_ASSIGN_OR_RETURN(Value name, Pop());
      LFS_ASSIGN_OR_RETURN(Value module, Pop());
      if (name.kind != Kind::kStr || module.kind != Kind::kStr)
        return Corrupt("STACK_GLOBAL needs two strings");
      LFS_ASSIGN_OR_RETURN(Value g, Resolve(heap_.strs[module.ref], heap_.strs[name.ref]));
      return Push(g);
    }
    case op::kReduce:
    case op::kNewObj: {
      // NEWOBJ is cls.__new__(cls, *args); for the classes we allow it builds
      // the same thing as calling them.
      LFS_ASSIGN_OR_RETURN(Value args, Pop());
      LFS_ASSIGN_OR_RETURN(Value fn, Pop());
      LFS_ASSIGN_OR_RETURN(Value r, Call(fn, args));
      return Push(r);
    }
    case op::kBuild: {
      // torch.save sets attributes (state_dict's _metadata) on an OrderedDict
      // this way; attributes are not items, so the state is dropped.
      LFS_RETURN_IF_ERROR(Pop().status());
      LFS_ASSIGN_OR_RETURN(Value * inst, Top());
      if (inst->kind != Kind::kDict)
        return Refuse(std::string("BUILD of a ") + KindName(inst->kind));
      return Status::OK();
    }
    case op::kBinPersId: {
      LFS_ASSIGN_OR_RETURN(Value pid, Pop());
      LFS_ASSIGN_OR_RETURN(Value s, PersistentLoad(pid));
      return Push(s);
    }
    default: {
      static constexpr char kHex[] = "0123456789abcdef";
      return Refuse(std::string("opcode 0x") + kHex[code >> 4] + kHex[code & 15] + " at offset " +
                    std::to_string(pos_ - 1));
    }
  }
}

Result<Value> Unpickler::Resolve(std::string_view module, std::string_view name) {
  const auto func = [](Func f) { return Value{Kind::kFunc, static_cast<uint32_t>(f), 0}; };
  const auto storage = [](DType t) {
    return Value{Kind::kStorageType, 0, static_cast<int64_t>(t)};
  };
  if (module == "collections" && name == "OrderedDict") return func(Func::kOrderedDict);
  if (module == "torch._utils") {
    if (name == "_rebuild_tensor_v2") return func(Func::kRebuildTensorV2);
    if (name == "_rebuild_parameter") return func(Func::kRebuildParameter);
    if (name == "_rebuild_parameter_with_state") return func(Func::kRebuildParameterWithState);
  }
  if (module == "torch.nn.parameter" && name == "Parameter") return func(Func::kParameter);
  // Storages of CUDA tensors are pickled as torch.cuda.<X>Storage by older
  // torch; the record bytes are the same.
  if (module == "torch" || module == "torch.cuda") {
    if (auto t = DTypeFromTorchStorage(name)) return storage(*t);
  }
  if (module == "torch.storage" && name == "UntypedStorage") return storage(DType::kU8);
  if (module == "torch" && IsTorchDTypeName(name)) return Value{Kind::kDTypeObj, 0, 0};
  return Status::Unsupported("pickle references " +
                             Quote(std::string(module) + "." + std::string(name)));
}

Result<std::vector<int64_t>> Unpickler::IntTuple(Value v, const char* what) {
  if (v.kind != Kind::kTuple)
    return Corrupt(std::string(what) + " is a " + KindName(v.kind) + ", not a tuple");
  const std::vector<Value>& items = heap_.seqs[v.ref];
  if (items.size() > lim_.max_dims) {
    return Corrupt(std::string(what) + " has " + std::to_string(items.size()) +
                   " dims, more than " + std::to_string(lim_.max_dims));
  }
  std::vector<int64_t> out;
  out.reserve(items.size());
  for (const Value& x : items) {
    if (x.kind != Kind::kInt || x.i < 0)
      return Corrupt(std::string(what) + " holds a non-integer or negative value");
    out.push_back(x.i);
  }
  return out;
}

Result<Value> Unpickler::Call(Value fn, Value args) {
  if (fn.kind != Kind::kFunc) return Refuse(std::string("call of a ") + KindName(fn.kind));
  if (args.kind != Kind::kTuple) return Corrupt("call arguments are not a tuple");
  const std::vector<Value>& a = heap_.seqs[args.ref];
  const auto expect_tensor = [&](size_t min_args, size_t max_args,
                                 const char* fname) -> Result<Value> {
    if (a.size() < min_args || a.size() > max_args || a[0].kind != Kind::kTensor) {
      return Corrupt(std::string(fname) + " called with bad arguments");
    }
    return a[0];  // a Parameter is its data tensor, as far as bytes go
  };
  switch (static_cast<Func>(fn.ref)) {
    case Func::kOrderedDict:
      if (!a.empty()) return Refuse("OrderedDict called with arguments");
      return NewDict();
    case Func::kRebuildTensorV2: return RebuildTensor(a);
    case Func::kRebuildParameter: return expect_tensor(3, 3, "_rebuild_parameter");
    case Func::kRebuildParameterWithState:
      return expect_tensor(4, 4, "_rebuild_parameter_with_state");
    case Func::kParameter: return expect_tensor(1, 2, "Parameter");
  }
  return Corrupt("unknown function");
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
//                    backward_hooks[, metadata])
Result<Value> Unpickler::RebuildTensor(const std::vector<Value>& a) {
  if (a.size() != 6 && a.size() != 7) return Corrupt("_rebuild_tensor_v2 takes 6 or 7 arguments");
  if (a[0].kind != Kind::kStorage)
    return Corrupt("_rebuild_tensor_v2 of a " + std::string(KindName(a[0].kind)));
  if (a[1].kind != Kind::kInt || a[1].i < 0) return Corrupt("bad storage offset");
  Tensor t;
  t.storage = a[0].ref;
  t.storage_offset = a[1].i;
  LFS_ASSIGN_OR_RETURN(t.shape, IntTuple(a[2], "size"));
  LFS_ASSIGN_OR_RETURN(t.stride, IntTuple(a[3], "stride"));
  if (t.shape.size() != t.stride.size()) return Corrupt("size and stride differ in length");
  LFS_RETURN_IF_ERROR(Charge(Slot<Tensor>() + 2 * sizeof(int64_t) * t.shape.size()));
  heap_.tensors.push_back(std::move(t));
  return Value{Kind::kTensor, static_cast<uint32_t>(heap_.tensors.size() - 1), 0};
}

// torch.save's persistent id: ('storage', storage_class, key, location, numel).
// One storage per key, as torch.load caches them: views share it.
Result<Value> Unpickler::PersistentLoad(Value pid) {
  if (pid.kind != Kind::kTuple)
    return Refuse(std::string("persistent id is a ") + KindName(pid.kind));
  const std::vector<Value>& p = heap_.seqs[pid.ref];
  if (p.empty() || p[0].kind != Kind::kStr || heap_.strs[p[0].ref] != "storage") {
    return Refuse("persistent id is not a storage");
  }
  if (p.size() != 5 || p[1].kind != Kind::kStorageType || p[2].kind != Kind::kStr ||
      p[3].kind != Kind::kStr || p[4].kind != Kind::kInt || p[4].i < 0) {
    return Corrupt("malformed storage persistent id");
  }
  const auto dtype = static_cast<DType>(p[1].i);
  const std::string& key = heap_.strs[p[2].ref];
  auto [it, inserted] =
      heap_.storage_by_key.try_emplace(key, static_cast<uint32_t>(heap_.storages.size()));
  if (inserted) {
    LFS_RETURN_IF_ERROR(Charge(Slot<Storage>() + key.size() +
                               Slot<std::pair<std::string, uint32_t>>() + key.size()));
    heap_.storages.push_back(Storage{dtype, key, p[4].i});
  } else {
    const Storage& s = heap_.storages[it->second];
    if (s.dtype != dtype || s.numel != p[4].i) {
      return Corrupt("storage " + Quote(key) + " is referenced with different types or sizes");
    }
  }
  return Value{Kind::kStorage, it->second, 0};
}

// ---------------------------------------------------------------------------
// Naming: tensors are named by their path through dicts (keys) and lists or
// tuples (indices), joined with '.', as state_dict() names parameters.

class Namer {
 public:
  Namer(const Heap& heap, const ParseLimits& lim)
      : heap_(heap), lim_(lim), max_visits_(heap.Objects() + lim.max_tensors) {}

  Status Walk(Value v) {
    std::string path;
    return Visit(v, &path, 0);
  }
  std::vector<std::pair<std::string, uint32_t>>& found() { return found_; }

 private:
  static bool Descends(Kind k) {
    return k == Kind::kTensor || k == Kind::kList || k == Kind::kTuple || k == Kind::kDict;
  }

  // Python's dict equality for the key types a checkpoint uses: a repeated
  // key replaces the earlier value in the earlier position (1 == True).
  std::optional<std::string> Identity(Value k) const {
    switch (k.kind) {
      case Kind::kStr: return "s" + heap_.strs[k.ref];
      case Kind::kInt:
      case Kind::kBool: return "i" + std::to_string(k.i);
      case Kind::kNone: return "n";
      default: return std::nullopt;
    }
  }
  Result<std::string> Name(Value k) const {
    switch (k.kind) {
      case Kind::kStr: return heap_.strs[k.ref];
      case Kind::kInt: return std::to_string(k.i);
      case Kind::kBool: return std::string(k.i ? "True" : "False");
      case Kind::kNone: return std::string("None");
      default: return Refuse(std::string("tensor under a dict key of type ") + KindName(k.kind));
    }
  }

  Status Child(const std::string& name, Value v, std::string* path, uint64_t depth) {
    const size_t old = path->size();
    if (depth > 0) *path += '.';
    *path += name;
    LFS_RETURN_IF_ERROR(Visit(v, path, depth + 1));
    path->resize(old);
    return Status::OK();
  }

  Status Visit(Value v, std::string* path, uint64_t depth) {
    if (!Descends(v.kind)) return Status::OK();
    if (depth > lim_.max_pickle_depth) {
      return Corrupt("objects nest deeper than " + std::to_string(lim_.max_pickle_depth));
    }
    // A shared object is named once per path to it, as Python would see it;
    // the cap stops a DAG (each level holding the previous one twice) from
    // doubling the work at every level.
    if (++visits_ > max_visits_) return Corrupt("object graph has too many paths to name");
    switch (v.kind) {
      case Kind::kTensor:
        if (found_.size() >= lim_.max_tensors) {
          return Corrupt("more than " + std::to_string(lim_.max_tensors) + " tensors");
        }
        found_.emplace_back(*path, v.ref);
        return Status::OK();
      case Kind::kList:
      case Kind::kTuple: {
        const std::vector<Value>& items = heap_.seqs[v.ref];
        for (size_t k = 0; k < items.size(); ++k) {
          LFS_RETURN_IF_ERROR(Child(std::to_string(k), items[k], path, depth));
        }
        return Status::OK();
      }
      case Kind::kDict: {
        const auto& items = heap_.dicts[v.ref];
        std::vector<std::pair<Value, Value>> unique;
        std::unordered_map<std::string, size_t> slot;
        for (const auto& [k, val] : items) {
          std::optional<std::string> id = Identity(k);
          if (id) {
            auto [it, inserted] = slot.try_emplace(std::move(*id), unique.size());
            if (!inserted) {
              unique[it->second].second = val;
              continue;
            }
          }
          unique.emplace_back(k, val);
        }
        for (const auto& [k, val] : unique) {
          if (!Descends(val.kind)) continue;
          LFS_ASSIGN_OR_RETURN(std::string name, Name(k));
          LFS_RETURN_IF_ERROR(Child(name, val, path, depth));
        }
        return Status::OK();
      }
      default: return Status::OK();
    }
  }

  const Heap& heap_;
  const ParseLimits& lim_;
  const uint64_t max_visits_;
  uint64_t visits_ = 0;
  std::vector<std::pair<std::string, uint32_t>> found_;
};

// Elements the view [offset, offset + extent) spans in its storage, 0 when
// it has no elements; nullopt on overflow.
std::optional<uint64_t> ViewEnd(const Tensor& t) {
  for (int64_t d : t.shape) {
    if (d == 0) return 0;
  }
  uint64_t last = static_cast<uint64_t>(t.storage_offset);
  for (size_t k = 0; k < t.shape.size(); ++k) {
    uint64_t span = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(t.shape[k] - 1),
                               static_cast<uint64_t>(t.stride[k]), &span) ||
        __builtin_add_overflow(last, span, &last)) {
      return std::nullopt;
    }
  }
  if (last == std::numeric_limits<uint64_t>::max()) return std::nullopt;
  return last + 1;
}

// torch's is_contiguous: C order, ignoring the stride of size-1 dims.
bool IsContiguous(const Tensor& t) {
  int64_t expected = 1;
  for (size_t k = t.shape.size(); k-- > 0;) {
    if (t.shape[k] == 0) return true;
    if (t.shape[k] == 1) continue;
    if (t.stride[k] != expected) return false;
    expected *= t.shape[k];
  }
  return true;
}

std::optional<uint64_t> Numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

// A window [base, base + size) of another RandomAccess: an .npz member.
class OffsetAccess final : public RandomAccess {
 public:
  OffsetAccess(const RandomAccess& f, uint64_t base, uint64_t size)
      : f_(f), base_(base), size_(size) {}
  uint64_t Size() const override { return size_; }
  Status ReadAt(uint64_t off, size_t n, std::string* out) const override {
    if (off > size_ || n > size_ - off) {
      return Status::Corruption("read of " + std::to_string(n) + " bytes at " +
                                std::to_string(off) + " past end of " + std::to_string(size_) +
                                "-byte member");
    }
    return f_.ReadAt(base_ + off, n, out);
  }

 private:
  const RandomAccess& f_;
  uint64_t base_;
  uint64_t size_;
};

}  // namespace

Result<ParsedFile> ParseTorchZip(const RandomAccess& f, const ParseLimits& lim) {
  LFS_ASSIGN_OR_RETURN(std::vector<ZipEntry> entries, ReadZipDirectory(f, lim));
  // torch.load takes the archive name from the first record and looks every
  // other record up under it.
  const size_t slash = entries.empty() ? std::string::npos : entries[0].name.find('/');
  if (slash == std::string::npos) return Status::Unsupported("zip is not a torch.save archive");
  const std::string prefix = entries[0].name.substr(0, slash + 1);
  std::unordered_map<std::string_view, const ZipEntry*> records;
  for (const ZipEntry& z : entries) {
    if (z.name.starts_with(prefix))
      records.emplace(std::string_view(z.name).substr(prefix.size()), &z);
  }
  const auto record = [&](std::string_view name) -> const ZipEntry* {
    auto it = records.find(name);
    return it == records.end() ? nullptr : it->second;
  };
  const ZipEntry* pkl = record("data.pkl");
  if (!pkl) return Status::Unsupported("zip is not a torch.save archive");
  // torch.save never compresses; a re-zipped archive would need inflating
  // before its records could map to tensor bytes.
  for (const ZipEntry& z : entries) {
    if (z.method != 0) {
      return Status::Unsupported("torch zip: record " + Quote(z.name) + " is compressed (method " +
                                 std::to_string(z.method) + ")");
    }
  }

  if (const ZipEntry* bo = record("byteorder")) {
    std::string order;
    if (bo->size > 16) return Status::Corruption("torch zip: byteorder record is too long");
    LFS_RETURN_IF_ERROR(f.ReadAt(bo->data_offset, bo->size, &order));
    if (order != "little") return Status::Unsupported("torch zip: byteorder " + Quote(order));
  }

  // Past 4 GiB the unpickler's 32-bit object indices could overflow.
  const uint64_t max_pickle =
      std::min<uint64_t>(lim.max_header_bytes, std::numeric_limits<uint32_t>::max());
  if (pkl->size > max_pickle) {
    return Status::Corruption("torch zip: data.pkl of " + std::to_string(pkl->size) +
                              " bytes exceeds the limit of " + std::to_string(max_pickle));
  }
  std::string pickle;
  LFS_RETURN_IF_ERROR(f.ReadAt(pkl->data_offset, pkl->size, &pickle));
  Unpickler up(pickle, lim);
  LFS_ASSIGN_OR_RETURN(Value root, up.Load());
  Heap& heap = up.heap();
  Namer namer(heap, lim);
  LFS_RETURN_IF_ERROR(namer.Walk(root));

  ParsedFile out;
  out.format = Format::kTorchZip;
  // Every storage the pickle loads is a data range, even one no named tensor
  // uses (torch.load reads it all the same).
  std::vector<const ZipEntry*> storage_record(heap.storages.size());
  for (size_t s = 0; s < heap.storages.size(); ++s) {
    const Storage& st = heap.storages[s];
    const std::string name = "data/" + st.key;
    const ZipEntry* z = record(name);
    if (!z) return Status::Corruption("torch zip: storage " + Quote(st.key) + " has no record");
    uint64_t need = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(st.numel), DTypeSize(st.dtype), &need) ||
        need > z->size) {
      return Status::Corruption("torch zip: record " + Quote(z->name) + " holds " +
                                std::to_string(z->size) + " bytes, less than its storage of " +
                                std::to_string(st.numel) + " " + DTypeName(st.dtype) + " elements");
    }
    storage_record[s] = z;
    out.ranges.push_back(ParsedFile::DataRange{z->data_offset, z->size, st.dtype, z->name});
  }
  std::sort(out.ranges.begin(), out.ranges.end(),
            [](const ParsedFile::DataRange& a, const ParsedFile::DataRange& b) {
              return a.offset < b.offset;
            });

  for (auto& [name, idx] : namer.found()) {
    const Tensor& t = heap.tensors[idx];
    const Storage& st = heap.storages[t.storage];
    const ZipEntry* z = storage_record[t.storage];
    const size_t es = DTypeSize(st.dtype);
    const std::optional<uint64_t> end = ViewEnd(t);
    const std::optional<uint64_t> numel = Numel(t.shape);
    if (!end || !numel || *end > static_cast<uint64_t>(st.numel)) {
      return Status::Corruption("torch zip: tensor " + Quote(name) +
                                " views elements beyond its storage " + Quote(st.key) + " of " +
                                std::to_string(st.numel));
    }
    TensorSpan span;
    span.name = std::move(name);
    span.dtype = st.dtype;
    span.shape = t.shape;
    span.stride = t.stride;
    span.storage_offset = t.storage_offset;
    span.storage_key = z->name;
    // An empty view may sit anywhere; only a contiguous one inside its
    // storage maps to one byte range (numel fits: the view is in bounds).
    const uint64_t first = static_cast<uint64_t>(t.storage_offset);
    if (IsContiguous(t) && first <= static_cast<uint64_t>(st.numel) - *numel) {
      span.offset = z->data_offset + first * es;
      span.nbytes = *numel * es;
    } else {
      span.offset = z->data_offset;
      span.nbytes = z->size;
    }
    out.tensors.push_back(std::move(span));
  }
  return out;
}

Result<ParsedFile> ParseNpz(const RandomAccess& f, const ParseLimits& lim) {
  LFS_ASSIGN_OR_RETURN(std::vector<ZipEntry> entries, ReadZipDirectory(f, lim));
  if (entries.size() > lim.max_tensors) {
    return Status::Corruption("npz: " + std::to_string(entries.size()) +
                              " members exceed the limit of " + std::to_string(lim.max_tensors));
  }
  ParsedFile out;
  out.format = Format::kNpz;
  for (const ZipEntry& z : entries) {
    if (z.method != 0)
      return Status::Unsupported("npz: member " + Quote(z.name) + " is compressed");
    if (!z.name.ends_with(".npy"))
      return Status::Unsupported("npz: member " + Quote(z.name) + " is not a .npy");
    OffsetAccess member(f, z.data_offset, z.size);
    Result<ParsedFile> npy = ParseNpy(member, lim);
    if (!npy.ok()) return npy.status().Annotate("npz member " + Quote(z.name));
    const std::string name = z.name.substr(0, z.name.size() - 4);
    for (ParsedFile::DataRange r : npy->ranges) {
      r.offset += z.data_offset;
      r.key = name;
      out.ranges.push_back(std::move(r));
    }
    for (TensorSpan t : npy->tensors) {
      t.offset += z.data_offset;
      t.name = name;
      out.tensors.push_back(std::move(t));
    }
  }
  std::sort(out.ranges.begin(), out.ranges.end(),
            [](const ParsedFile::DataRange& a, const ParsedFile::DataRange& b) {
              return a.offset < b.offset;
            });
  return out;
}

// ---------------------------------------------------------------------------
// Writer.

namespace {

// A protocol-2 pickle using only opcodes that torch 1.13's weights_only
// unpickler accepts (it lacks SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL).
class PickleWriter {
 public:
  std::string& bytes() { return out_; }
  void Op(uint8_t code) { out_ += static_cast<char>(code); }
  void Str(std::string_view s) {
    Op(op::kBinUnicode);
    PutLE(s.size(), 4);
    out_ += s;
  }
  void Int(uint64_t v) {
    if (v <= 0xFF) {
      Op(op::kBinInt1);
      PutLE(v, 1);
    } else if (v <= 0xFFFF) {
      Op(op::kBinInt2);
      PutLE(v, 2);
    } else if (v <= 0x7FFFFFFF) {
      Op(op::kBinInt);
      PutLE(v, 4);
    } else {
      // Minimal two's complement: a clear top bit marks it non-negative.
      std::string b;
      do {
        b += static_cast<char>(v & 0xFF);
        v >>= 8;
      } while (v != 0 || (static_cast<unsigned char>(b.back()) & 0x80));
      Op(op::kLong1);
      PutLE(b.size(), 1);
      out_ += b;
    }
  }
  void IntTuple(const std::vector<int64_t>& v) {
    if (v.empty()) return Op(op::kEmptyTuple);
    if (v.size() > 3) Op(op::kMark);
    for (int64_t x : v) Int(static_cast<uint64_t>(x));
    Op(v.size() > 3 ? op::kTuple : static_cast<uint8_t>(op::kTuple1 + v.size() - 1));
  }
  // Each global is written once and fetched from the memo afterwards. A
  // state dict uses at most 2 + one per storage class, so one-byte memo
  // indices suffice.
  void Global(const std::string& module, const std::string& name) {
    auto [it, inserted] =
        memo_.try_emplace(module + "\n" + name, static_cast<uint8_t>(memo_.size()));
    if (!inserted) {
      Op(op::kBinGet);
      PutLE(it->second, 1);
      return;
    }
    Op(op::kGlobal);
    out_ += module + "\n" + name + "\n";
    Op(op::kBinPut);
    PutLE(it->second, 1);
  }

 private:
  void PutLE(uint64_t v, size_t n) {
    for (size_t k = 0; k < n; ++k) out_ += static_cast<char>(v >> (8 * k));
  }
  std::string out_;
  std::map<std::string, uint8_t> memo_;
};

void PutLE(std::string* s, uint64_t v, size_t n) {
  for (size_t k = 0; k < n; ++k) *s += static_cast<char>(v >> (8 * k));
}

constexpr uint64_t kZip32Max = 0xFFFFFFFF;
constexpr uint64_t kAlignment = 64;  // torch's kFieldAlignment: records can be mmapped
constexpr uint16_t kFlagUtf8 = 0x0800;
constexpr uint16_t kDosDate =
    (0 << 9) | (1 << 5) | 1;  // 1980-01-01: fixed, so layouts are reproducible

struct Record {
  std::string name;
  uint64_t size = 0;
  uint32_t crc = 0;
  int32_t tensor = -1;  // -1: data is `literal`
  std::string literal;
  uint64_t local_header_offset = 0;
};

class LayoutBuilder {
 public:
  void Literal(std::string s) {
    if (s.empty()) return;
    layout_.size += s.size();
    if (!layout_.segments.empty() && layout_.segments.back().tensor == -1) {
      layout_.segments.back().length += s.size();
      layout_.segments.back().literal += s;
      return;
    }
    ViewSegment seg;
    seg.length = s.size();
    seg.literal = std::move(s);
    layout_.segments.push_back(std::move(seg));
  }
  void Tensor(int32_t index, uint64_t length) {
    if (length == 0) return;
    ViewSegment seg;
    seg.length = length;
    seg.tensor = index;
    layout_.segments.push_back(std::move(seg));
    layout_.size += length;
  }
  uint64_t size() const { return layout_.size; }
  ViewLayout Finish() { return std::move(layout_); }

 private:
  ViewLayout layout_;
};

// Local header; its extra field holds zip64 sizes when needed and torch's
// "FB" padding field so the data starts on a 64-byte boundary.
std::string LocalHeader(const Record& r, uint64_t offset) {
  const bool zip64 = r.size >= kZip32Max;
  std::string extra;
  if (zip64) {
    PutLE(&extra, 0x0001, 2);
    PutLE(&extra, 16, 2);
    PutLE(&extra, r.size, 8);
    PutLE(&extra, r.size, 8);
  }
  const uint64_t unpadded = offset + 30 + r.name.size() + extra.size() + 4;
  const uint64_t pad = (kAlignment - unpadded % kAlignment) % kAlignment;
  extra += "FB";
  PutLE(&extra, pad, 2);
  extra.append(pad, 'Z');

  std::string h;
  PutLE(&h, 0x04034b50, 4);
  PutLE(&h, zip64 ? 45 : 20, 2);  // version needed
  PutLE(&h, kFlagUtf8, 2);
  PutLE(&h, 0, 2);  // stored
  PutLE(&h, 0, 2);  // time
  PutLE(&h, kDosDate, 2);
  PutLE(&h, r.crc, 4);
  PutLE(&h, zip64 ? kZip32Max : r.size, 4);
  PutLE(&h, zip64 ? kZip32Max : r.size, 4);
  PutLE(&h, r.name.size(), 2);
  PutLE(&h, extra.size(), 2);
  return h + r.name + extra;
}

std::string CentralHeader(const Record& r) {
  const bool big = r.size >= kZip32Max;
  const bool far = r.local_header_offset >= kZip32Max;
  std::string extra;
  if (big || far) {
    PutLE(&extra, 0x0001, 2);
    PutLE(&extra, (big ? 16 : 0) + (far ? 8 : 0), 2);
    if (big) {
      PutLE(&extra, r.size, 8);
      PutLE(&extra, r.size, 8);
    }
    if (far) PutLE(&extra, r.local_header_offset, 8);
  }
  const uint16_t version = big || far ? 45 : 20;
  std::string h;
  PutLE(&h, 0x02014b50, 4);
  PutLE(&h, version, 2);  // made by (MS-DOS attributes)
  PutLE(&h, version, 2);  // needed
  PutLE(&h, kFlagUtf8, 2);
  PutLE(&h, 0, 2);  // stored
  PutLE(&h, 0, 2);  // time
  PutLE(&h, kDosDate, 2);
  PutLE(&h, r.crc, 4);
  PutLE(&h, big ? kZip32Max : r.size, 4);
  PutLE(&h, big ? kZip32Max : r.size, 4);
  PutLE(&h, r.name.size(), 2);
  PutLE(&h, extra.size(), 2);
  PutLE(&h, 0, 2);  // comment
  PutLE(&h, 0, 2);  // disk
  PutLE(&h, 0, 2);  // internal attributes
  PutLE(&h, 0, 4);  // external attributes
  PutLE(&h, far ? kZip32Max : r.local_header_offset, 4);
  return h + r.name + extra;
}

std::string EndRecords(uint64_t entries, uint64_t cd_offset, uint64_t cd_size) {
  std::string e;
  const bool zip64 = entries >= 0xFFFF || cd_offset >= kZip32Max || cd_size >= kZip32Max;
  if (zip64) {
    const uint64_t record_offset = cd_offset + cd_size;
    PutLE(&e, 0x06064b50, 4);
    PutLE(&e, 44, 8);  // size of the rest of this record
    PutLE(&e, 45, 2);
    PutLE(&e, 45, 2);
    PutLE(&e, 0, 4);  // this disk
    PutLE(&e, 0, 4);  // directory's disk
    PutLE(&e, entries, 8);
    PutLE(&e, entries, 8);
    PutLE(&e, cd_size, 8);
    PutLE(&e, cd_offset, 8);
    PutLE(&e, 0x07064b50, 4);  // locator
    PutLE(&e, 0, 4);
    PutLE(&e, record_offset, 8);
    PutLE(&e, 1, 4);  // total disks
  }
  PutLE(&e, 0x06054b50, 4);
  PutLE(&e, 0, 2);
  PutLE(&e, 0, 2);
  PutLE(&e, std::min<uint64_t>(entries, 0xFFFF), 2);
  PutLE(&e, std::min<uint64_t>(entries, 0xFFFF), 2);
  PutLE(&e, std::min(cd_size, kZip32Max), 4);
  PutLE(&e, std::min(cd_offset, kZip32Max), 4);
  PutLE(&e, 0, 2);  // comment
  return e;
}

// C-contiguous strides as torch computes them (a 0-size dim counts as 1).
std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> stride(shape.size());
  int64_t s = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    stride[k] = s;
    s *= std::max<int64_t>(shape[k], 1);
  }
  return stride;
}

}  // namespace

Result<ViewLayout> LayoutTorchZip(const std::vector<TorchZipTensor>& tensors,
                                  const std::string& archive_name) {
  if (archive_name.empty() || archive_name.find('/') != std::string::npos ||
      archive_name.size() > 1024) {
    return Status::InvalidArgument("torch zip: bad archive name " + Quote(archive_name));
  }
  if (tensors.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("torch zip: too many tensors");
  }

  PickleWriter p;
  p.Op(op::kProto);
  p.Op(2);
  p.Global("collections", "OrderedDict");
  p.Op(op::kEmptyTuple);
  p.Op(op::kReduce);
  if (!tensors.empty()) p.Op(op::kMark);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TorchZipTensor& t = tensors[i];
    const std::optional<std::string> storage = DTypeTorchStorage(t.dtype);
    if (!storage)
      return Status::Unsupported("torch zip: no torch storage for dtype " +
                                 std::string(DTypeName(t.dtype)));
    const std::optional<uint64_t> numel = Numel(t.shape);
    uint64_t nbytes = 0;
    if (!numel || *numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(*numel, DTypeSize(t.dtype), &nbytes) || nbytes != t.nbytes) {
      return Status::InvalidArgument("torch zip: tensor " + Quote(t.name) + " has " +
                                     std::to_string(t.nbytes) +
                                     " bytes, which does not match its dtype and shape");
    }
    p.Str(t.name);
    p.Global("torch._utils", "_rebuild_tensor_v2");
    p.Op(op::kMark);
    p.Op(op::kMark);
    p.Str("storage");
    p.Global("torch", *storage);
    p.Str(std::to_string(i));
    p.Str("cpu");
    p.Int(*numel);
    p.Op(op::kTuple);
    p.Op(op::kBinPersId);
    p.Int(0);  // storage offset
    p.IntTuple(t.shape);
    p.IntTuple(ContiguousStrides(t.shape));
    p.Op(op::kNewFalse);                     // requires_grad
    p.Global("collections", "OrderedDict");  // backward hooks: OrderedDict()
    p.Op(op::kEmptyTuple);
    p.Op(op::kReduce);
    p.Op(op::kTuple);
    p.Op(op::kReduce);
  }
  if (!tensors.empty()) p.Op(op::kSetItems);
  p.Op(op::kStop);

  const std::string prefix = archive_name + "/";
  std::vector<Record> records;
  records.reserve(tensors.size() + 3);
  auto literal = [&](std::string name, std::string data) {
    Record r;
    r.name = prefix + name;
    r.size = data.size();
    r.crc =
        static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(data.data()), data.size()));
    r.literal = std::move(data);
    records.push_back(std::move(r));
  };
  literal("data.pkl", std::move(p.bytes()));
  literal("byteorder", "little");
  for (size_t i = 0; i < tensors.size(); ++i) {
    Record r;
    r.name = prefix + "data/" + std::to_string(i);
    r.size = tensors[i].nbytes;
    r.crc = tensors[i].crc32;
    r.tensor = static_cast<int32_t>(i);
    records.push_back(std::move(r));
  }
  literal("version", "3\n");

  LayoutBuilder b;
  for (Record& r : records) {
    r.local_header_offset = b.size();
    b.Literal(LocalHeader(r, r.local_header_offset));
    if (r.tensor >= 0) {
      b.Tensor(r.tensor, r.size);
    } else {
      b.Literal(std::move(r.literal));
    }
  }
  const uint64_t cd_offset = b.size();
  std::string cd;
  for (const Record& r : records) cd += CentralHeader(r);
  const uint64_t cd_size = cd.size();
  b.Literal(std::move(cd));
  b.Literal(EndRecords(records.size(), cd_offset, cd_size));
  return b.Finish();
}

}  // namespace lfs::formats
