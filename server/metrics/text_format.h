// The Prometheus text exposition format, version 0.0.4:
//   # HELP <name> <help, with \ and newline escaped>
//   # TYPE <name> counter|gauge|histogram|untyped
//   <name>{<label>="<value, with \ " and newline escaped>",...} <value>
// Histograms expand to cumulative <name>_bucket{le="..."} lines ending in le="+Inf", then
// <name>_sum and <name>_count. Numbers are written the way Python's prometheus_client writes them
// (1.0, 0.005, 1e+06, +Inf), so le labels match a vLLM server's byte for byte.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "server/metrics/metric_family.h"

namespace mambaserve::metrics {

inline constexpr std::string_view kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string FormatValue(double value);
std::string EscapeLabelValue(std::string_view value);
std::string EscapeHelp(std::string_view help);

// Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*. Label names: [a-zA-Z_][a-zA-Z0-9_]*, not starting with
// "__" (reserved) and not "le" (histograms own it).
bool IsValidMetricName(std::string_view name);
bool IsValidLabelName(std::string_view name);

void AppendFamily(const FamilySnapshot& family, std::string* out);
std::string Serialize(const std::vector<FamilySnapshot>& families);

}  // namespace mambaserve::metrics
