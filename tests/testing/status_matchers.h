// gtest assertions for Status and Result<T>: failures print the Status.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "store/status.h"

namespace lfs::testing {

inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

template <typename T>
::testing::AssertionResult IsOk(const T& r) {
  const Status& s = StatusOf(r);
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << s.ToString();
}

template <typename T>
::testing::AssertionResult HasCode(const T& r, Status::Code c) {
  const Status& s = StatusOf(r);
  if (s.code() == c) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "got " << (s.ok() ? "OK" : s.ToString()) << ", want " << Status::CodeName(c);
}

// Little-endian bytes of float32 values (tensor data for fixtures).
inline std::string F32(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

}  // namespace lfs::testing

#define ASSERT_OK(expr) ASSERT_TRUE(::lfs::testing::IsOk((expr))) << #expr
#define EXPECT_OK(expr) EXPECT_TRUE(::lfs::testing::IsOk((expr))) << #expr
#define EXPECT_CODE(expr, c) \
  EXPECT_TRUE(::lfs::testing::HasCode((expr), ::lfs::Status::Code::c)) << #expr
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)                    \
  auto tmp = (expr);                                                 \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status().ToString(); \
  lhs = std::move(tmp).value()
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(LFS_CONCAT(_res_, __LINE__), lhs, expr)
