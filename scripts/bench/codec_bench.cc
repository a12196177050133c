// Codec and hash throughput on weight-like data, one thread.
//
//   codec_bench [--mib N] [--reps N] [--dump DIR]
//
// Data (deterministic, seeded): N MiB (default 64) of N(0, 0.02) weights as
// fp32 and as bf16 (round to nearest even), plus a fine-tuned child of each
// (w + N(0, 1) * 1e-3 * |w|) for the delta codec. The data is cut into
// 256 KiB, 1 MiB or 4 MiB chunks, each encoded by codec::Encode, which picks
// the smallest codec it tries: elem_width 1 tries raw/zstd, the dtype's width
// adds byte grouping, a base adds the XOR delta; the last column counts its
// picks. A time is the best of --reps runs over all chunks.
// --dump DIR writes the same bytes to DIR/{fp32,bf16}{,_child}.bin so that
// codec_bench.sh can run `zstd -b` on them for comparison.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "store/codec.h"
#include "store/digest.h"

namespace {

using lfs::codec::CodecId;

// SplitMix64 + Box-Muller rather than <random> distributions, whose output
// differs between standard libraries: the dumped files must be reproducible.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
  double Uniform() { return ((Next() >> 11) + 0.5) * 0x1.0p-53; }  // in (0, 1)
  double Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double r = std::sqrt(-2.0 * std::log(Uniform()));
    const double theta = 2.0 * M_PI * Uniform();
    spare_ = r * std::sin(theta);
    has_spare_ = true;
    return r * std::cos(theta);
  }

 private:
  uint64_t state_;
  double spare_ = 0;
  bool has_spare_ = false;
};

std::vector<float> Weights(size_t count, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> w(count);
  for (float& x : w) x = static_cast<float>(0.02 * rng.Normal());
  return w;
}

std::vector<float> FineTune(const std::vector<float>& parent, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> child(parent);
  for (float& x : child) x += static_cast<float>(1e-3 * rng.Normal() * std::fabs(x));
  return child;
}

std::string AsFp32(const std::vector<float>& w) {
  return std::string(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
}

std::string AsBf16(const std::vector<float>& w) {
  std::string out(w.size() * 2, '\0');
  for (size_t i = 0; i < w.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &w[i], 4);
    const uint16_t half = static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
    std::memcpy(&out[2 * i], &half, 2);
  }
  return out;
}

struct Dataset {
  std::string name;
  int elem_width;
  std::string parent;
  std::string child;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

template <typename Fn>
double BestOf(int reps, Fn&& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto start = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, Seconds(start));
  }
  return best;
}

std::vector<std::string_view> Split(std::string_view data, size_t chunk) {
  std::vector<std::string_view> chunks;
  for (size_t off = 0; off < data.size(); off += chunk) chunks.push_back(data.substr(off, chunk));
  return chunks;
}

struct Measured {
  double ratio = 0;
  double encode_gbps = 0;
  double decode_gbps = 0;
  std::map<CodecId, int> chosen;
};

// Encodes every chunk of data (against the same chunk of base when given)
// with Encode's choice for elem_width, and decodes it back.
Measured Measure(std::string_view data, const std::string_view* base, size_t chunk_size,
                 int elem_width, int reps) {
  const std::vector<std::string_view> chunks = Split(data, chunk_size);
  std::vector<std::string_view> base_chunks;
  if (base) base_chunks = Split(*base, chunk_size);
  lfs::codec::EncodeOptions opts;
  opts.elem_width = elem_width;

  std::vector<lfs::codec::Encoded> encoded(chunks.size());
  const double encode_s = BestOf(reps, [&] {
    for (size_t i = 0; i < chunks.size(); ++i) {
      encoded[i] = lfs::codec::Encode(chunks[i], opts, base ? &base_chunks[i] : nullptr);
    }
  });
  // Verified once, untimed; the timed runs only decode.
  std::string out;
  for (size_t i = 0; i < chunks.size(); ++i) {
    lfs::Status st = lfs::codec::Decode(encoded[i].codec, encoded[i].payload, chunks[i].size(),
                                        elem_width, base ? base_chunks[i] : "", &out);
    if (!st.ok() || out != chunks[i]) {
      std::fprintf(stderr, "round trip failed: %s\n", st.ToString().c_str());
      std::exit(1);
    }
  }
  const double decode_s = BestOf(reps, [&] {
    for (size_t i = 0; i < chunks.size(); ++i) {
      (void)lfs::codec::Decode(encoded[i].codec, encoded[i].payload, chunks[i].size(), elem_width,
                               base ? base_chunks[i] : "", &out);
    }
  });

  Measured m;
  size_t stored = 0;
  for (const auto& e : encoded) {
    stored += e.payload.size();
    ++m.chosen[e.codec];
  }
  m.ratio = static_cast<double>(data.size()) / stored;
  m.encode_gbps = data.size() / encode_s / 1e9;
  m.decode_gbps = data.size() / decode_s / 1e9;
  return m;
}

std::string Chosen(const std::map<CodecId, int>& chosen) {
  std::string s;
  for (const auto& [codec, count] : chosen) {
    if (!s.empty()) s += " ";
    s += std::string(lfs::codec::CodecName(codec)) + "×" + std::to_string(count);
  }
  return s;
}

double HashGbps(std::string_view data, size_t chunk_size, int reps) {
  const std::vector<std::string_view> chunks = Split(data, chunk_size);
  uint64_t sink = 0;
  const double s = BestOf(reps, [&] {
    for (std::string_view c : chunks) sink += lfs::Digest::Of(c).Low64();
  });
  if (sink == 42) std::puts("");  // keeps the hashing from being optimised out
  return data.size() / s / 1e9;
}

void Dump(const std::string& dir, const std::vector<Dataset>& sets) {
  for (const Dataset& d : sets) {
    for (auto [suffix, bytes] : {std::pair{"", &d.parent}, std::pair{"_child", &d.child}}) {
      const std::string path = dir + "/" + d.name + suffix + ".bin";
      std::ofstream f(path, std::ios::binary);
      f.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
      if (!f) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        std::exit(1);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 64;
  int reps = 3;
  std::string dump_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--mib" && i + 1 < argc) {
      mib = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (arg == "--dump" && i + 1 < argc) {
      dump_dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--mib N] [--reps N] [--dump DIR]\n", argv[0]);
      return 2;
    }
  }

  const size_t bytes = mib << 20;
  const std::vector<float> fp32_parent = Weights(bytes / 4, 1);
  const std::vector<float> bf16_parent = Weights(bytes / 2, 2);
  const std::vector<Dataset> sets = {
      {"fp32", 4, AsFp32(fp32_parent), AsFp32(FineTune(fp32_parent, 3))},
      {"bf16", 2, AsBf16(bf16_parent), AsBf16(FineTune(bf16_parent, 4))},
  };
  if (!dump_dir.empty()) Dump(dump_dir, sets);

  std::printf(
      "%zu MiB per dataset, N(0, 0.02) weights; child = w + N(0,1)*1e-3*|w|; "
      "best of %d, one thread\n\n",
      mib, reps);
  std::printf("%-5s %-6s %-22s %6s %9s %9s  %s\n", "dtype", "chunk", "codec", "ratio", "enc GB/s",
              "dec GB/s", "chosen per chunk");
  for (size_t chunk : {size_t{256} << 10, size_t{1} << 20, size_t{4} << 20}) {
    const std::string chunk_name =
        chunk >= (1 << 20) ? std::to_string(chunk >> 20) + "M" : std::to_string(chunk >> 10) + "K";
    for (const Dataset& d : sets) {
      std::printf("%-5s %-6s %-22s %6s %9.2f %9s\n", d.name.c_str(), chunk_name.c_str(),
                  "xxh3-128 (hash)", "-", HashGbps(d.parent, chunk, reps), "-");
      struct Mode {
        std::string name;
        int elem_width;
        bool delta;
      };
      const Mode modes[] = {
          {"plain (elem_width 1)", 1, false},
          {"float (elem_width " + std::to_string(d.elem_width) + ")", d.elem_width, false},
          {"child, parent as base", d.elem_width, true},
      };
      for (const Mode& mode : modes) {
        const std::string_view base = d.parent;
        const Measured m = Measure(mode.delta ? d.child : d.parent, mode.delta ? &base : nullptr,
                                   chunk, mode.elem_width, reps);
        std::printf("%-5s %-6s %-22s %6.3f %9.2f %9.2f  %s\n", d.name.c_str(), chunk_name.c_str(),
                    mode.name.c_str(), m.ratio, m.encode_gbps, m.decode_gbps,
                    Chosen(m.chosen).c_str());
      }
    }
  }
  return 0;
}
