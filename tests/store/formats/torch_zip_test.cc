// ParseTorchZip / ParseNpz against files written by the system's torch and
// numpy, hostile archives, and LayoutTorchZip output loaded back by torch.
#include "store/formats/torch_zip.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "store/formats/zip.h"

namespace lfs::formats {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kPython = "/usr/bin/python3";

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary);
  out << data;
}

int Shell(const std::string& cmd) { return std::system(cmd.c_str()); }

// Reader fixtures: real torch.save / np.savez output plus hand-made hostile
// archives, with a JSON description of every tensor as torch sees it and each
// tensor's bytes (C order) in a side file.
constexpr const char* kGenerator = R"PY(
import json, os, pickle, sys, zipfile
import numpy as np
import torch

out, final_dir = sys.argv[1], sys.argv[2]  # files go to out, which is renamed to final_dir
torch.manual_seed(0)
DT = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
      torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32",
      torch.int64: "I64", torch.bool: "BOOL", torch.complex64: "C64"}
expected = {}

def raw(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()

def walk(obj, path, found):
    # The naming convention under test: keys and indices joined with '.'.
    sub = lambda k: str(k) if path == "" else path + "." + str(k)
    if isinstance(obj, torch.Tensor):
        found.append((path, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            walk(v, sub(k), found)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk(v, sub(i), found)

def save(fname, obj):
    torch.save(obj, os.path.join(out, fname))
    found = []
    walk(obj, "", found)
    groups, items = {}, []
    for i, (name, t) in enumerate(found):
        ptr = t.storage().data_ptr()
        group = groups.setdefault(ptr, len(groups)) if t.numel() else -1
        data = "%s.%d.bin" % (fname, i)
        open(os.path.join(out, data), "wb").write(raw(t))
        items.append(dict(name=name, dtype=DT[t.dtype], shape=list(t.shape), stride=list(t.stride()),
                          storage_offset=t.storage_offset(), contiguous=t.is_contiguous(),
                          group=group, data=data))
    expected[fname] = items

def zwrite(fname, members, method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(os.path.join(out, fname), "w", method) as z:
        for n, b in members:
            z.writestr(n, b)

def members(fname):
    with zipfile.ZipFile(os.path.join(out, fname)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]

lin = torch.nn.Linear(4, 3)
save("linear.pt", lin.state_dict())
seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
save("sequential.pt", seq.state_dict())
save("nested.pt", {"model": seq.state_dict(), "step": 3, "lr": 0.1, "name": "run-1", "dtype": torch.float32})
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
save("shared.pt", {"base": base, "view": base.view(6, 4), "t": base.t(), "rows": base[1:3],
                   "col": base[:, 2], "tail": base[2, 1:5], "again": base})
save("dtypes.pt", {
    "bf16": torch.randn(5, 3).to(torch.bfloat16), "f16": torch.randn(4).half(),
    "i8": torch.arange(-5, 5, dtype=torch.int8), "b": torch.tensor([True, False, True]),
    "f64": torch.randn(2, 2, dtype=torch.float64), "i64": torch.arange(7),
    "i32": torch.arange(5, dtype=torch.int32), "i16": torch.arange(6, dtype=torch.int16),
    "u8": torch.arange(200, 210, dtype=torch.uint8), "c64": torch.randn(3, dtype=torch.complex64),
    "empty": torch.zeros(0), "empty3": torch.zeros(2, 0, 3), "scalar": torch.tensor(3.5)})
save("list.pt", [torch.ones(2), torch.zeros(3), (torch.full((2,), 7.0), {"x": torch.eye(2)})])
save("param.pt", {"p": torch.nn.Parameter(torch.ones(3)), "q": torch.nn.Parameter(torch.zeros(2), requires_grad=False)})
model = torch.nn.Linear(3, 2)
opt = torch.optim.Adam(model.parameters())
model(torch.ones(1, 3)).sum().backward()
opt.step()
save("optim.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1})
save("tensor.pt", torch.arange(5, dtype=torch.int64))

# Newer torch adds byteorder and .data/ records: accepted.
zwrite("newer.pt", members("linear.pt") + [("linear/byteorder", b"little"),
                                           ("linear/.data/serialization_id", b"1234")])
zwrite("bigendian.pt", members("linear.pt") + [("linear/byteorder", b"big")])
zwrite("deflated.pt", members("linear.pt"), zipfile.ZIP_DEFLATED)
zwrite("short_record.pt", [(n, b[:40] if n == "short/data/0" else b) for n, b in
                           [(n.replace("linear/", "short/"), b) for n, b in members("linear.pt")]])
zwrite("plain.zip", [("hello.txt", b"hi")])
zwrite("nopickle.zip", [("dir/readme.txt", b"hi"), ("dir/version", b"3\n")])
np.savez(os.path.join(out, "arrays.npz"), a=np.arange(12, dtype=np.float32).reshape(3, 4),
         b=np.array([1, 2, 3], dtype=np.int64), c=np.zeros((0, 2), dtype=np.float16),
         f=np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)))
np.savez_compressed(os.path.join(out, "compressed.npz"), a=np.arange(10))

def hostile(fname, pkl, extra=()):
    zwrite(fname, [("archive/data.pkl", pkl), ("archive/version", b"3\n")] + list(extra))

def s(x):  # BINUNICODE
    b = x.encode()
    return b"X" + len(b).to_bytes(4, "little") + b

cmd = "touch " + os.path.join(final_dir, "pwned")  # the test checks it never appears
hostile("os_system.pt", b"\x80\x02cos\nsystem\n" + s(cmd) + b"\x85R.")
hostile("stack_global.pt", b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93" + s("__import__('os').system('" + cmd + "')") + b"\x85R.")
hostile("namespace.pt", pickle.dumps(__import__("argparse").Namespace(a=1), protocol=2))
hostile("deep_lists.pt", b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".")
hostile("deep_marks.pt", b"\x80\x02" + b"(" * 100000 + b"N.")
# 60 levels of lists that each hold the previous level twice: 2^60 paths.
dag = b"\x80\x02]q\x00"
for i in range(1, 60):
    dag += b"](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i])
hostile("dag.pt", dag + b".")
hostile("memo_missing.pt", b"\x80\x02h\x05.")
hostile("memo_gap.pt", b"\x80\x02Nr\x00\x00\x00\x01.")
# Half a million empty tuples: each costs far more memory than its one byte.
hostile("memory.pt", b"\x80\x02(" + b")" * 500000 + b"l.")
hostile("no_stop.pt", b"\x80\x02}")
def view(size, stride, numel=4):
    # {'w': _rebuild_tensor_v2(storage('0', numel floats), 0, size, stride, False, OrderedDict())}
    num = lambda x: b"J" + x.to_bytes(4, "little") if x < 2**31 else b"\x8a\x08" + x.to_bytes(8, "little")
    tup = lambda xs: b"(" + b"".join(num(x) for x in xs) + b"t"
    return (b"\x80\x02}" + s("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(" +
            b"(" + s("storage") + b"ctorch\nFloatStorage\n" + s("0") + s("cpu") + b"J" +
            numel.to_bytes(4, "little") + b"tQK\x00" + tup(size) + tup(stride) +
            b"\x89ccollections\nOrderedDict\n)RtRs.")
data0 = [("archive/data/0", bytes(range(16)))]
hostile("view_ok.pt", view([2, 2], [2, 1]), data0)
hostile("view_strided.pt", view([2], [3]), data0)
hostile("view_oob.pt", view([3, 2], [2, 1]), data0)
hostile("view_huge.pt", view([2, 2], [2**31 - 1, 2**31 - 1]), data0)
hostile("view_overflow.pt", view([4, 4], [2**62, 2**62]), data0)
hostile("storage_too_big.pt", view([2, 2], [2, 1], numel=5), data0)
hostile("missing_record.pt", view([2, 2], [2, 1]))

json.dump(expected, open(os.path.join(out, "expected.json"), "w"))
)PY";

// Loads LayoutTorchZip output with torch and compares with the bytes the
// test wrote: `check.py FILE SPEC.json` prints one line per load mode.
constexpr const char* kChecker = R"PY(
import collections, inspect, json, sys, zipfile
import torch

path, spec = sys.argv[1], json.load(open(sys.argv[2]))
DT = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
      "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32,
      "I64": torch.int64, "BOOL": torch.bool, "C64": torch.complex64}
assert zipfile.ZipFile(path).testzip() is None  # every CRC matches
modes = [False]
if "weights_only" in inspect.signature(torch.load).parameters:
    modes.append(True)
for wo in modes:
    sd = torch.load(path, weights_only=wo)
    assert type(sd) is collections.OrderedDict, type(sd)
    assert list(sd.keys()) == [t["name"] for t in spec], list(sd.keys())
    for t in spec:
        got, dtype = sd[t["name"]], DT[t["dtype"]]
        raw = bytearray(open(t["data"], "rb").read())
        if raw:
            want = torch.frombuffer(raw, dtype=dtype).reshape(t["shape"])
        else:
            want = torch.empty(t["shape"], dtype=dtype)
        assert got.dtype == dtype and list(got.shape) == t["shape"], (t["name"], got.dtype, got.shape)
        assert got.is_contiguous() and torch.equal(got, want), t["name"]
    print("ok weights_only=%s" % wo)
)PY";

// Fixture files are deterministic: they are generated once per generator
// version and shared by the test processes ctest starts (one per test).
class TorchZipTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string key = std::to_string(std::hash<std::string>{}(kGenerator));
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("lfs_torch_zip_fixtures." + std::to_string(getuid()) + "." + key));
    if (fs::exists(*dir_ / "expected.json")) return;
    // Build in a private directory and rename it into place, so concurrent
    // test processes never see half a fixture set.
    std::string tmpl = (fs::temp_directory_path() / "lfs_torch_zip_gen.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    WriteFile(fs::path(tmpl) / "gen.py", kGenerator);
    ASSERT_EQ(Shell(std::string(kPython) + " " + tmpl + "/gen.py " + tmpl + " " + dir_->string()),
              0);
    std::error_code ec;
    fs::rename(tmpl, *dir_, ec);
    if (ec) fs::remove_all(tmpl);  // another process won the race
    ASSERT_TRUE(fs::exists(*dir_ / "expected.json"));
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string Fixture(const std::string& name) { return ReadFile(*dir_ / name); }
  static json Expected(const std::string& name) {
    return json::parse(ReadFile(*dir_ / "expected.json"))[name];
  }

  static Result<ParsedFile> Parse(const std::string& name, const ParseLimits& lim = {}) {
    const std::string bytes = Fixture(name);
    MemoryAccess f(bytes);
    return ParseTorchZip(f, lim);
  }

  // Gathers a view's elements (C order) from its storage record.
  static std::string Gather(const std::string& file, const TensorSpan& t, const ParsedFile& pf) {
    const ParsedFile::DataRange* range = nullptr;
    for (const auto& r : pf.ranges) {
      if (r.key == t.storage_key) range = &r;
    }
    EXPECT_NE(range, nullptr) << t.storage_key;
    if (!range) return "";
    const size_t es = DTypeSize(t.dtype);
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    std::string out;
    std::vector<int64_t> idx(t.shape.size(), 0);
    for (int64_t n = 0; n < numel; ++n) {
      int64_t elem = t.storage_offset;
      for (size_t k = 0; k < idx.size(); ++k) elem += idx[k] * t.stride[k];
      out += file.substr(range->offset + elem * es, es);
      for (size_t k = idx.size(); k-- > 0;) {
        if (++idx[k] < t.shape[k]) break;
        idx[k] = 0;
      }
    }
    return out;
  }

  // Compares every tensor with what torch reported, bytes included.
  static void ExpectMatchesTorch(const std::string& name) {
    SCOPED_TRACE(name);
    const std::string file = Fixture(name);
    MemoryAccess f(file);
    Result<ParsedFile> pf = ParseTorchZip(f);
    ASSERT_TRUE(pf.ok()) << pf.status().ToString();
    EXPECT_EQ(pf->format, Format::kTorchZip);
    const json want = Expected(name);
    ASSERT_EQ(pf->tensors.size(), want.size());
    for (size_t i = 1; i < pf->ranges.size(); ++i) {
      EXPECT_LE(pf->ranges[i - 1].offset + pf->ranges[i - 1].nbytes, pf->ranges[i].offset);
    }
    std::map<int, std::string> key_of_group;
    for (size_t i = 0; i < want.size(); ++i) {
      const TensorSpan& t = pf->tensors[i];
      const json& w = want[i];
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.name, w["name"].get<std::string>());
      EXPECT_STREQ(DTypeName(t.dtype), w["dtype"].get<std::string>().c_str());
      EXPECT_EQ(t.shape, w["shape"].get<std::vector<int64_t>>());
      EXPECT_EQ(t.stride, w["stride"].get<std::vector<int64_t>>());
      EXPECT_EQ(t.storage_offset, w["storage_offset"].get<int64_t>());
      const std::string data = Fixture(w["data"].get<std::string>());
      EXPECT_EQ(Gather(file, t, *pf), data);
      if (w["contiguous"].get<bool>()) {
        ASSERT_LE(t.offset + t.nbytes, file.size());
        EXPECT_EQ(t.nbytes, data.size());
        EXPECT_EQ(file.substr(t.offset, t.nbytes), data);
      } else {
        // Not one byte range: the span is the whole storage record.
        bool whole = false;
        for (const auto& r : pf->ranges)
          whole |= r.key == t.storage_key && r.offset == t.offset && r.nbytes == t.nbytes;
        EXPECT_TRUE(whole);
      }
      const int group = w["group"].get<int>();
      if (group >= 0) {
        auto [it, inserted] = key_of_group.try_emplace(group, t.storage_key);
        if (!inserted) {
          EXPECT_EQ(it->second, t.storage_key);
        }
        for (const auto& [g, k] : key_of_group) {
          if (g != group) {
            EXPECT_NE(k, t.storage_key);
          }
        }
      }
    }
  }

  static fs::path* dir_;
};
fs::path* TorchZipTest::dir_ = nullptr;

std::vector<std::string> Names(const ParsedFile& pf) {
  std::vector<std::string> n;
  for (const TensorSpan& t : pf.tensors) n.push_back(t.name);
  return n;
}

TEST_F(TorchZipTest, LinearStateDict) {
  ExpectMatchesTorch("linear.pt");
  Result<ParsedFile> pf = Parse("linear.pt");
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ(Names(*pf), (std::vector<std::string>{"weight", "bias"}));
  ASSERT_EQ(pf->ranges.size(), 2u);
  EXPECT_EQ(pf->ranges[0].key, "linear/data/0");
  EXPECT_EQ(pf->ranges[0].dtype, DType::kF32);
  for (const auto& r : pf->ranges) EXPECT_EQ(r.offset % 64, 0u);  // torch aligns records
}

TEST_F(TorchZipTest, SequentialStateDict) {
  ExpectMatchesTorch("sequential.pt");
  Result<ParsedFile> pf = Parse("sequential.pt");
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ(Names(*pf), (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
}

TEST_F(TorchZipTest, NestedCheckpoint) {
  ExpectMatchesTorch("nested.pt");
  Result<ParsedFile> pf = Parse("nested.pt");
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ(Names(*pf), (std::vector<std::string>{"model.0.weight", "model.0.bias",
                                                  "model.2.weight", "model.2.bias"}));
}

TEST_F(TorchZipTest, SharedStorageAndViews) {
  ExpectMatchesTorch("shared.pt");
  Result<ParsedFile> pf = Parse("shared.pt");
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ(pf->ranges.size(), 1u);
  EXPECT_EQ(pf->tensors.size(), 7u);
}

TEST_F(TorchZipTest, DTypes) { ExpectMatchesTorch("dtypes.pt"); }

TEST_F(TorchZipTest, ListsAndTuples) {
  ExpectMatchesTorch("list.pt");
  Result<ParsedFile> pf = Parse("list.pt");
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ(Names(*pf), (std::vector<std::string>{"0", "1", "2.0", "2.1.x"}));
}

TEST_F(TorchZipTest, Parameters) { ExpectMatchesTorch("param.pt"); }

TEST_F(TorchZipTest, OptimizerStateWithIntKeys) {
  ExpectMatchesTorch("optim.pt");
  Result<ParsedFile> pf = Parse("optim.pt");
  ASSERT_TRUE(pf.ok());
  const std::vector<std::string> names = Names(*pf);
  EXPECT_NE(std::find(names.begin(), names.end(), "optimizer.state.0.exp_avg"), names.end());
}

TEST_F(TorchZipTest, BareTensor) {
  ExpectMatchesTorch("tensor.pt");
  Result<ParsedFile> pf = Parse("tensor.pt");
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ(Names(*pf), (std::vector<std::string>{""}));
}

TEST_F(TorchZipTest, NewerArchiveRecords) {
  Result<ParsedFile> pf = Parse("newer.pt");
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  EXPECT_EQ(Names(*pf), (std::vector<std::string>{"weight", "bias"}));
}

TEST_F(TorchZipTest, RejectsWhatIsNotAStateDict) {
  struct Case {
    const char* file;
    Status::Code code;
    const char* says;
  };
  const Case cases[] = {
      {"bigendian.pt", Status::Code::kUnsupported, "byteorder"},
      {"deflated.pt", Status::Code::kUnsupported, "compressed"},
      {"plain.zip", Status::Code::kUnsupported, "not a torch.save archive"},
      {"nopickle.zip", Status::Code::kUnsupported, "not a torch.save archive"},
      {"arrays.npz", Status::Code::kUnsupported, "not a torch.save archive"},
      {"os_system.pt", Status::Code::kUnsupported, "pickle references 'os.system'"},
      {"stack_global.pt", Status::Code::kUnsupported, "pickle references 'builtins.eval'"},
      {"namespace.pt", Status::Code::kUnsupported, "pickle references 'argparse.Namespace'"},
      {"deep_lists.pt", Status::Code::kCorruption, "nest deeper"},
      {"deep_marks.pt", Status::Code::kCorruption, "MARKs nest deeper"},
      {"dag.pt", Status::Code::kCorruption, "too many paths"},
      {"memo_missing.pt", Status::Code::kCorruption, "memo"},
      {"memo_gap.pt", Status::Code::kCorruption, "gap"},
      {"memory.pt", Status::Code::kCorruption, "bytes of memory"},
      {"no_stop.pt", Status::Code::kCorruption, "without STOP"},
      {"short_record.pt", Status::Code::kCorruption, "less than its storage"},
      {"view_oob.pt", Status::Code::kCorruption, "beyond its storage"},
      {"view_huge.pt", Status::Code::kCorruption, "beyond its storage"},
      {"view_overflow.pt", Status::Code::kCorruption, "beyond its storage"},
      {"storage_too_big.pt", Status::Code::kCorruption, "less than its storage"},
      {"missing_record.pt", Status::Code::kCorruption, "has no record"},
  };
  for (const Case& c : cases) {
    Result<ParsedFile> pf = Parse(c.file);
    ASSERT_FALSE(pf.ok()) << c.file;
    EXPECT_EQ(pf.status().code(), c.code) << c.file << ": " << pf.status().ToString();
    EXPECT_NE(pf.status().message().find(c.says), std::string::npos)
        << c.file << ": " << pf.status().ToString();
  }
  EXPECT_FALSE(fs::exists(*dir_ / "pwned"));  // nothing was executed
}

TEST_F(TorchZipTest, HandMadeViews) {
  Result<ParsedFile> pf = Parse("view_ok.pt");
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  ASSERT_EQ(pf->tensors.size(), 1u);
  const TensorSpan& t = pf->tensors[0];
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.storage_key, "archive/data/0");
  EXPECT_EQ(t.nbytes, 16u);

  // Strided (elements 0 and 3): the span is the whole record.
  pf = Parse("view_strided.pt");
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  EXPECT_EQ(pf->tensors[0].offset, pf->ranges[0].offset);
  EXPECT_EQ(pf->tensors[0].nbytes, 16u);
}

TEST_F(TorchZipTest, TruncatedArchive) {
  const std::string file = Fixture("linear.pt");
  for (size_t keep : {size_t{0}, size_t{100}, file.size() / 2, file.size() - 1}) {
    MemoryAccess f(std::string_view(file).substr(0, keep));
    Result<ParsedFile> pf = ParseTorchZip(f);
    ASSERT_FALSE(pf.ok()) << keep;
    EXPECT_TRUE(pf.status().IsCorruption()) << keep << ": " << pf.status().ToString();
  }
}

TEST_F(TorchZipTest, Limits) {
  ParseLimits lim;
  lim.max_tensors = 3;
  Result<ParsedFile> pf = Parse("sequential.pt", lim);
  EXPECT_TRUE(pf.status().IsCorruption()) << pf.status().ToString();
  lim = ParseLimits{};
  lim.max_pickle_depth = 1;  // model -> 0.weight needs depth 2
  pf = Parse("nested.pt", lim);
  EXPECT_TRUE(pf.status().IsCorruption()) << pf.status().ToString();
  lim = ParseLimits{};
  lim.max_dims = 1;
  pf = Parse("linear.pt", lim);
  EXPECT_TRUE(pf.status().IsCorruption()) << pf.status().ToString();
}

// Random edits of a real archive's pickle must give a Status, never a crash
// (meaningful under ASan). The pickle is the first record, stored at 64.
TEST_F(TorchZipTest, RandomPickleEditsNeverCrash) {
  const std::string base = Fixture("nested.pt");
  MemoryAccess bf(base);
  Result<std::vector<ZipEntry>> entries = ReadZipDirectory(bf);
  ASSERT_TRUE(entries.ok());
  const ZipEntry& pkl = (*entries)[0];
  std::mt19937 rng(42);
  int parsed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string b = base;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e)
      b[pkl.data_offset + rng() % pkl.size] = static_cast<char>(rng());
    MemoryAccess f(b);
    parsed += ParseTorchZip(f).ok();
  }
  EXPECT_GT(parsed, 0);  // some edits (inside names) keep the pickle valid
}

TEST_F(TorchZipTest, Npz) {
  const std::string file = Fixture("arrays.npz");
  MemoryAccess f(file);
  Result<ParsedFile> pf = ParseNpz(f);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  EXPECT_EQ(pf->format, Format::kNpz);
  EXPECT_EQ(Names(*pf), (std::vector<std::string>{"a", "b", "c", "f"}));
  ASSERT_EQ(pf->ranges.size(), 4u);
  const TensorSpan& a = pf->tensors[0];
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3, 4}));
  ASSERT_EQ(a.nbytes, 48u);
  for (int i = 0; i < 12; ++i) {
    float v;
    std::memcpy(&v, file.data() + a.offset + 4 * i, 4);
    EXPECT_EQ(v, static_cast<float>(i));
  }
  const TensorSpan& b = pf->tensors[1];
  EXPECT_EQ(b.dtype, DType::kI64);
  int64_t last;
  std::memcpy(&last, file.data() + b.offset + 16, 8);
  EXPECT_EQ(last, 3);
  EXPECT_EQ(pf->tensors[2].nbytes, 0u);
  EXPECT_EQ(pf->tensors[3].stride, (std::vector<int64_t>{1, 2}));  // Fortran order

  const std::string c = Fixture("compressed.npz");
  MemoryAccess cf(c);
  EXPECT_EQ(ParseNpz(cf).status().code(), Status::Code::kUnsupported);
  const std::string pt = Fixture("linear.pt");
  MemoryAccess pf2(pt);
  EXPECT_EQ(ParseNpz(pf2).status().code(), Status::Code::kUnsupported);
}

// ---------------------------------------------------------------------------
// Writer.

// Deterministic element bytes that are never NaN (torch.equal(NaN, NaN) is
// false): the top exponent bit of every float is cleared, bools are 0 or 1.
std::string MakeData(DType dtype, uint64_t nbytes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string d(nbytes, '\0');
  for (char& c : d) c = static_cast<char>(rng());
  const size_t es = DTypeSize(dtype);
  for (size_t at = 0; at < nbytes; at += es) {
    switch (dtype) {
      case DType::kBool: d[at] = static_cast<char>(d[at] & 1); break;
      case DType::kF16:
      case DType::kBF16:
      case DType::kF32:
      case DType::kF64: d[at + es - 1] = static_cast<char>(d[at + es - 1] & 0xBF); break;
      default: break;
    }
  }
  return d;
}

struct Spec {
  TorchZipTensor t;
  std::string data;
};

Spec MakeTensor(std::string name, DType dtype, std::vector<int64_t> shape, uint32_t seed) {
  Spec s;
  s.t.name = std::move(name);
  s.t.dtype = dtype;
  s.t.shape = std::move(shape);
  uint64_t n = DTypeSize(dtype);
  for (int64_t d : s.t.shape) n *= d;
  s.t.nbytes = n;
  s.data = MakeData(dtype, n, seed);
  s.t.crc32 = static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(s.data.data()), n));
  return s;
}

std::string Materialise(const ViewLayout& layout, const std::vector<Spec>& specs) {
  std::string out;
  for (const ViewSegment& seg : layout.segments) {
    if (seg.tensor < 0) {
      EXPECT_EQ(seg.literal.size(), seg.length);
      out += seg.literal;
    } else {
      out += specs[seg.tensor].data.substr(seg.tensor_offset, seg.length);
    }
  }
  EXPECT_EQ(out.size(), layout.size);
  return out;
}

TEST_F(TorchZipTest, WriterLoadsInTorchAndParsesBack) {
  std::vector<Spec> specs = {
      MakeTensor("layers.0.weight", DType::kF32, {3, 4}, 1),
      MakeTensor("layers.0.bias", DType::kBF16, {5}, 2),
      MakeTensor("half", DType::kF16, {2, 2}, 3),
      MakeTensor("scalar", DType::kF64, {}, 4),
      MakeTensor("empty", DType::kF32, {0}, 5),
      MakeTensor("empty3", DType::kI32, {2, 0, 3}, 6),
      MakeTensor("ids", DType::kI64, {300}, 7),
      MakeTensor("mask", DType::kBool, {9}, 8),
      MakeTensor("q", DType::kI8, {4, 1, 2}, 9),
      MakeTensor("bytes", DType::kU8, {70000}, 10),
      MakeTensor("c", DType::kC64, {3}, 11),
      MakeTensor("i16", DType::kI16, {2, 3, 4, 5}, 12),
      MakeTensor("unicode.\xc3\xbc", DType::kF32, {1}, 13),
  };
  std::vector<TorchZipTensor> tensors;
  for (const Spec& s : specs) tensors.push_back(s.t);
  Result<ViewLayout> layout = LayoutTorchZip(tensors, "model");
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  const std::string file = Materialise(*layout, specs);

  char tmpl[] = "/tmp/lfs_torch_zip_writer.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const fs::path dir(tmpl);
  WriteFile(dir / "model.pt", file);
  json spec = json::array();
  for (size_t i = 0; i < specs.size(); ++i) {
    const fs::path data = dir / (std::to_string(i) + ".bin");
    WriteFile(data, specs[i].data);
    spec.push_back({{"name", specs[i].t.name},
                    {"dtype", DTypeName(specs[i].t.dtype)},
                    {"shape", specs[i].t.shape},
                    {"data", data.string()}});
  }
  WriteFile(dir / "spec.json", spec.dump());
  WriteFile(dir / "check.py", kChecker);
  const std::string cmd = std::string(kPython) + " " + (dir / "check.py").string() + " " +
                          (dir / "model.pt").string() + " " + (dir / "spec.json").string() + " > " +
                          (dir / "out.txt").string();
  EXPECT_EQ(Shell(cmd), 0) << cmd;
  EXPECT_EQ(ReadFile(dir / "out.txt"), "ok weights_only=False\nok weights_only=True\n");
  fs::remove_all(dir);

  MemoryAccess f(file);
  Result<std::vector<ZipEntry>> entries = ReadZipDirectory(f);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  for (const ZipEntry& z : *entries) EXPECT_EQ(z.data_offset % 64, 0u) << z.name;
  Result<ParsedFile> pf = ParseTorchZip(f);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  ASSERT_EQ(pf->tensors.size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpan& t = pf->tensors[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, specs[i].t.name);
    EXPECT_EQ(t.dtype, specs[i].t.dtype);
    EXPECT_EQ(t.shape, specs[i].t.shape);
    EXPECT_EQ(t.storage_key, "model/data/" + std::to_string(i));
    EXPECT_EQ(file.substr(t.offset, t.nbytes), specs[i].data);
  }
}

TEST_F(TorchZipTest, WriterEmptyStateDict) {
  Result<ViewLayout> layout = LayoutTorchZip({});
  ASSERT_TRUE(layout.ok());
  const std::string file = Materialise(*layout, {});
  MemoryAccess f(file);
  Result<ParsedFile> pf = ParseTorchZip(f);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  EXPECT_TRUE(pf->tensors.empty());
}

TEST_F(TorchZipTest, WriterRejectsBadInput) {
  Spec s = MakeTensor("w", DType::kF32, {2}, 1);
  s.t.nbytes = 7;
  EXPECT_EQ(LayoutTorchZip({s.t}).status().code(), Status::Code::kInvalidArgument);
  s.t.shape = {-1};
  s.t.nbytes = 4;
  EXPECT_EQ(LayoutTorchZip({s.t}).status().code(), Status::Code::kInvalidArgument);
  s = MakeTensor("w", DType::kF32, {2}, 1);
  s.t.dtype = DType::kUnknown;
  EXPECT_EQ(LayoutTorchZip({s.t}).status().code(), Status::Code::kUnsupported);
  EXPECT_EQ(LayoutTorchZip({}, "a/b").status().code(), Status::Code::kInvalidArgument);
}

// A RandomAccess over a file, for the sparse multi-GiB archive below.
class FileAccess final : public RandomAccess {
 public:
  explicit FileAccess(const std::string& path) : fd_(open(path.c_str(), O_RDONLY)) {}
  ~FileAccess() override { close(fd_); }
  uint64_t Size() const override {
    struct stat st;
    return fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  }
  Status ReadAt(uint64_t off, size_t n, std::string* out) const override {
    out->resize(n);
    size_t done = 0;
    while (done < n) {
      const ssize_t r = pread(fd_, out->data() + done, n - done, static_cast<off_t>(off + done));
      if (r <= 0) return Status::Corruption("short read");
      done += static_cast<size_t>(r);
    }
    return Status::OK();
  }

 private:
  int fd_;
};

// A 4 GiB tensor forces zip64 sizes, and the tensor after it a zip64 local
// header offset. The file is sparse: only headers and small tensors are
// written. torch's own zip reader (miniz, used by torch.load) must list it
// and read the records after the big one.
TEST_F(TorchZipTest, WriterZip64) {
  const uint64_t big = (uint64_t{1} << 32) + 100;
  std::vector<Spec> specs = {MakeTensor("before", DType::kF32, {4}, 1), Spec{},
                             MakeTensor("after", DType::kI32, {3}, 2)};
  specs[1].t.name = "big";
  specs[1].t.dtype = DType::kU8;
  specs[1].t.shape = {static_cast<int64_t>(big)};
  specs[1].t.nbytes = big;
  {
    const std::string zeros(1 << 20, '\0');
    const uLong chunk = crc32_z(0, reinterpret_cast<const Bytef*>(zeros.data()), zeros.size());
    uLong crc = 0;
    uint64_t left = big;
    for (; left >= zeros.size(); left -= zeros.size())
      crc = crc32_combine64(crc, chunk, zeros.size());
    crc =
        crc32_combine64(crc, crc32_z(0, reinterpret_cast<const Bytef*>(zeros.data()), left), left);
    specs[1].t.crc32 = static_cast<uint32_t>(crc);
  }
  std::vector<TorchZipTensor> tensors;
  for (const Spec& s : specs) tensors.push_back(s.t);
  Result<ViewLayout> layout = LayoutTorchZip(tensors);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();

  char tmpl[] = "/tmp/lfs_torch_zip64.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const fs::path dir(tmpl);
  const std::string path = (dir / "big.pt").string();
  {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    uint64_t at = 0;
    for (const ViewSegment& seg : layout->segments) {
      const std::string* bytes = seg.tensor < 0    ? &seg.literal
                                 : seg.tensor == 1 ? nullptr
                                                   : &specs[seg.tensor].data;
      if (bytes) {
        ASSERT_EQ(pwrite(fd, bytes->data(), seg.length, static_cast<off_t>(at)),
                  static_cast<ssize_t>(seg.length));
      }
      at += seg.length;
    }
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(layout->size)), 0);
    close(fd);
  }

  FileAccess f(path);
  Result<ParsedFile> pf = ParseTorchZip(f);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  ASSERT_EQ(pf->tensors.size(), 3u);
  EXPECT_EQ(pf->tensors[1].nbytes, big);
  EXPECT_GT(pf->tensors[2].offset, uint64_t{1} << 32);
  std::string after;
  ASSERT_TRUE(f.ReadAt(pf->tensors[2].offset, 12, &after).ok());
  EXPECT_EQ(after, specs[2].data);

  const std::string script = R"PY(
import sys, zipfile, torch
path, after = sys.argv[1], bytes.fromhex(sys.argv[2])
infos = {i.filename: i for i in zipfile.ZipFile(path).infolist()}
assert infos["archive/data/1"].file_size == (1 << 32) + 100
assert infos["archive/data/2"].header_offset > (1 << 32)
r = torch._C.PyTorchFileReader(path)
assert r.get_record("data/2") == after
assert r.get_record("version") == b"3\n"
print("ok")
)PY";
  WriteFile(dir / "check.py", script);
  std::string hex;
  for (unsigned char c : specs[2].data) {
    static constexpr char kHex[] = "0123456789abcdef";
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  const std::string cmd = std::string(kPython) + " " + (dir / "check.py").string() + " " + path +
                          " " + hex + " > " + (dir / "out.txt").string();
  EXPECT_EQ(Shell(cmd), 0) << cmd;
  EXPECT_EQ(ReadFile(dir / "out.txt"), "ok\n");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace lfs::formats
