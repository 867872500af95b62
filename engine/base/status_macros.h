// Early-return helpers for absl::Status / absl::StatusOr, the engine's only error channel.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MS_CONCAT_INNER_(a, b) a##b
#define MS_CONCAT_(a, b) MS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                \
  do {                                       \
    ::absl::Status ms_status_ = (expr);      \
    if (!ms_status_.ok()) return ms_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` — binds the value of a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(MS_CONCAT_(ms_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()
