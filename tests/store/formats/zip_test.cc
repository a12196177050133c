// ReadZipDirectory against archives written by Python's zipfile (stored,
// data descriptors, comments, zip64 end records) and against hostile edits.
#include "store/formats/zip.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

namespace lfs::formats {
namespace {

namespace fs = std::filesystem;

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

uint32_t Get32(const std::string& b, size_t pos) {
  uint32_t v = 0;
  for (size_t i = 4; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(b[pos + i]);
  return v;
}
void Put16(std::string* b, size_t pos, uint16_t v) {
  for (size_t i = 0; i < 2; ++i) (*b)[pos + i] = static_cast<char>(v >> (8 * i));
}
void Put32(std::string* b, size_t pos, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) (*b)[pos + i] = static_cast<char>(v >> (8 * i));
}

// Fixtures come from the system Python's zipfile, an independent writer.
// Fixtures come from the system Python's zipfile, an independent writer.
// `gen.py DIR NAME` writes DIR/NAME and DIR/NAME.json, zipfile's view of it.
constexpr const char* kGenerator = R"PY(
import io, json, os, sys, warnings, zipfile
warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we want
out, name = sys.argv[1], sys.argv[2]
path = os.path.join(out, name)

def describe():
    raw = open(path, "rb").read()
    items = []
    with zipfile.ZipFile(path) as z:
        for i in z.infolist():
            h = i.header_offset
            nlen = int.from_bytes(raw[h + 26:h + 28], "little")
            elen = int.from_bytes(raw[h + 28:h + 30], "little")
            items.append(dict(name=i.filename, size=i.file_size, crc=i.CRC,
                              method=i.compress_type, header=h, data=h + 30 + nlen + elen))
    json.dump(items, open(path + ".json", "w"))

def write(members, method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", method) as z:
        for n, b in members:
            z.writestr(n, b)

if name == "basic.zip":
    write([("a.txt", b"hello"), ("dir/b.bin", bytes(range(256)) * 4), ("empty", b"")])
    describe()
elif name == "comment.zip":
    # A comment holding an end-record signature must not be taken for the
    # record (zipfile itself would be fooled, so it is added after describe()).
    write([("x", b"12345")])
    describe()
    comment = b"PK\x05\x06 not the end record " + b"z" * 40
    raw = bytearray(open(path, "rb").read())
    raw[-2:] = len(comment).to_bytes(2, "little")
    open(path, "wb").write(bytes(raw) + comment)
elif name == "dup.zip":
    write([("same", b"one"), ("same", b"two")])
elif name == "stream.zip":
    # Streaming (unseekable) output: sizes live in data descriptors after the
    # data, as in torch 1.13's archives; local headers carry zeros.
    class Unseekable(io.RawIOBase):
        def __init__(self): self.buf = bytearray()
        def writable(self): return True
        def write(self, b): self.buf += b; return len(b)
    u = Unseekable()
    with zipfile.ZipFile(u, "w", zipfile.ZIP_STORED) as z:
        for n, b in [("s/one", b"first record"), ("s/two", b"x" * 1000)]:
            with z.open(n, "w") as f:
                f.write(b)
    open(path, "wb").write(bytes(u.buf))
    describe()
elif name == "many.zip":
    # More than 65535 entries: zipfile writes a zip64 end record and locator.
    write([("m/%d" % i, b"" if i % 7 else b"%d" % i) for i in range(70000)])
    describe()
elif name == "deflated.zip":
    write([("d", b"a" * 5000)], zipfile.ZIP_DEFLATED)
    describe()
)PY";

class ZipTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/lfs_zip_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new fs::path(tmpl);
    WriteFile(*dir_ / "gen.py", kGenerator);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  // Generated on first use: ctest runs every test in its own process.
  static std::string Fixture(const std::string& name) {
    if (!fs::exists(*dir_ / name)) {
      const std::string cmd =
          "/usr/bin/python3 " + (*dir_ / "gen.py").string() + " " + dir_->string() + " " + name;
      EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    return ReadFile(*dir_ / name);
  }

  // Checks every entry against what Python's zipfile reports.
  static void ExpectMatches(const std::string& name) {
    const std::string bytes = Fixture(name);
    const nlohmann::json want = nlohmann::json::parse(ReadFile(*dir_ / (name + ".json")));
    MemoryAccess f(bytes);
    Result<std::vector<ZipEntry>> r = ReadZipDirectory(f);
    ASSERT_TRUE(r.ok()) << name << ": " << r.status().ToString();
    ASSERT_EQ(r->size(), want.size()) << name;
    for (size_t i = 0; i < want.size(); ++i) {
      const ZipEntry& z = (*r)[i];
      SCOPED_TRACE(name + ":" + z.name);
      EXPECT_EQ(z.name, want[i]["name"].get<std::string>());
      EXPECT_EQ(z.size, want[i]["size"].get<uint64_t>());
      EXPECT_EQ(z.crc32, want[i]["crc"].get<uint32_t>());
      EXPECT_EQ(z.method, want[i]["method"].get<uint16_t>());
      EXPECT_EQ(z.local_header_offset, want[i]["header"].get<uint64_t>());
      EXPECT_EQ(z.data_offset, want[i]["data"].get<uint64_t>());
      if (z.method == 0) {
        EXPECT_EQ(z.compressed_size, z.size);
        const uint32_t crc = static_cast<uint32_t>(
            crc32_z(0, reinterpret_cast<const Bytef*>(bytes.data() + z.data_offset), z.size));
        EXPECT_EQ(crc, z.crc32);
      }
    }
  }

  // Offset of the end of central directory record of an archive without comment.
  static size_t Eocd(const std::string& b) { return b.size() - 22; }
  static size_t CentralDir(const std::string& b) { return Get32(b, Eocd(b) + 16); }

  static fs::path* dir_;
};
fs::path* ZipTest::dir_ = nullptr;

Status Read(const std::string& bytes, const ParseLimits& lim = {}) {
  MemoryAccess f(bytes);
  return ReadZipDirectory(f, lim).status();
}

TEST_F(ZipTest, StoredEntries) { ExpectMatches("basic.zip"); }
TEST_F(ZipTest, CommentWithSignature) { ExpectMatches("comment.zip"); }
TEST_F(ZipTest, DataDescriptors) { ExpectMatches("stream.zip"); }
TEST_F(ZipTest, Zip64EndRecordWithManyEntries) { ExpectMatches("many.zip"); }
TEST_F(ZipTest, CompressedEntriesAreListed) { ExpectMatches("deflated.zip"); }

TEST_F(ZipTest, EmptyArchive) {
  std::string eocd("PK\x05\x06", 4);
  eocd.append(18, '\0');
  MemoryAccess f(eocd);
  Result<std::vector<ZipEntry>> r = ReadZipDirectory(f);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->empty());
}

TEST_F(ZipTest, NotAZip) {
  EXPECT_TRUE(Read("").IsCorruption());
  EXPECT_TRUE(Read("just some text that is long enough to search").IsCorruption());
}

TEST_F(ZipTest, Truncated) {
  const std::string b = Fixture("basic.zip");
  for (size_t cut : {size_t{1}, size_t{10}, size_t{22}, b.size() / 2}) {
    Status s = Read(b.substr(0, b.size() - cut));
    EXPECT_TRUE(s.IsCorruption()) << cut << ": " << s.ToString();
  }
  // Bytes missing from the middle: the directory no longer sits where the
  // end record says.
  Status s = Read(b.substr(0, 40) + b.substr(60));
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(ZipTest, DirectoryOffsetPastEof) {
  std::string b = Fixture("basic.zip");
  Put32(&b, Eocd(b) + 16, 0x7FFFFFF0);
  Status s = Read(b);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(ZipTest, HugeEntryCount) {
  std::string b = Fixture("basic.zip");
  Put16(&b, Eocd(b) + 8, 0xFFFF);
  Put16(&b, Eocd(b) + 10, 0xFFFF);
  Status s = Read(b);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("cannot fit"), std::string::npos) << s.ToString();
}

TEST_F(ZipTest, LimitsApply) {
  const std::string many = Fixture("many.zip");
  ParseLimits few;
  few.max_tensors = 100;
  Status s = Read(many, few);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  ParseLimits small_dir;
  small_dir.max_header_bytes = 4096;
  s = Read(many, small_dir);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(ZipTest, LocalHeaderPastEof) {
  std::string b = Fixture("basic.zip");
  Put32(&b, CentralDir(b) + 42, 0x10000000);
  Status s = Read(b);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(ZipTest, OverlappingEntries) {
  // Grow the first entry (a.txt, 5 bytes) over the next local header.
  std::string b = Fixture("basic.zip");
  const size_t cd = CentralDir(b);
  Put32(&b, cd + 20, 200);
  Put32(&b, cd + 24, 200);
  Status s = Read(b);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("overlap"), std::string::npos) << s.ToString();
}

TEST_F(ZipTest, DataPastDirectory) {
  // The last entry ("empty") claims bytes that belong to the directory.
  std::string b = Fixture("basic.zip");
  const size_t cd = CentralDir(b);
  size_t pos = cd;
  for (int i = 0; i < 2; ++i) {
    pos += 46 +
           (static_cast<unsigned char>(b[pos + 28]) | static_cast<unsigned char>(b[pos + 29]) << 8);
  }
  Put32(&b, pos + 20, 100000);
  Put32(&b, pos + 24, 100000);
  Status s = Read(b);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(ZipTest, StoredSizeMismatch) {
  std::string b = Fixture("basic.zip");
  Put32(&b, CentralDir(b) + 20, 4);  // compressed 4, uncompressed 5
  Status s = Read(b);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(ZipTest, LocalNameDiffers) {
  std::string b = Fixture("basic.zip");
  b[30] = 'b';  // first local header's name: "a.txt" -> "b.txt"
  Status s = Read(b);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(ZipTest, DuplicateNames) {
  Status s = Read(Fixture("dup.zip"));
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(ZipTest, Encrypted) {
  std::string b = Fixture("basic.zip");
  Put16(&b, CentralDir(b) + 8, 1);
  EXPECT_EQ(Read(b).code(), Status::Code::kUnsupported);
}

TEST_F(ZipTest, Zip64LocatorPointingNowhere) {
  // Splice a zip64 locator whose record offset lies past the locator.
  std::string b = Fixture("basic.zip");
  const size_t eocd = Eocd(b);
  std::string loc("PK\x06\x07", 4);
  loc.append(16, '\0');
  Put32(&loc, 8, 0x7FFFFFFF);
  Put32(&loc, 16, 1);
  b.insert(eocd, loc);
  Status s = Read(b);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

// Random byte edits must yield a Status, never a crash or a hang (run under
// ASan to make this meaningful).
TEST_F(ZipTest, RandomEditsNeverCrash) {
  const std::string base = Fixture("basic.zip");
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    std::string b = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) b[rng() % b.size()] = static_cast<char>(rng());
    MemoryAccess f(b);
    Result<std::vector<ZipEntry>> r = ReadZipDirectory(f);
    if (r.ok()) {
      for (const ZipEntry& z : *r) EXPECT_LE(z.data_offset + z.compressed_size, b.size());
    }
  }
}

}  // namespace
}  // namespace lfs::formats
