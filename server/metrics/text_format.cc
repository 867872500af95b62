#include "server/metrics/text_format.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace mambaserve::metrics {
namespace {

std::string TwoDigitExponent(int exponent) {
  std::string out = exponent < 0 ? "e-" : "e+";
  const int magnitude = std::abs(exponent);
  if (magnitude < 10) out += '0';
  out += std::to_string(magnitude);
  return out;
}

void AppendLabels(const Labels& labels, std::string_view extra_name, std::string_view extra_value,
                  std::string* out) {
  if (labels.empty() && extra_name.empty()) return;
  out->push_back('{');
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out->push_back(',');
    first = false;
    absl::StrAppend(out, name, "=\"", EscapeLabelValue(value), "\"");
  }
  if (!extra_name.empty()) {
    if (!first) out->push_back(',');
    out->append(extra_name.data(), extra_name.size());
    out->append("=\"");
    out->append(extra_value.data(), extra_value.size());
    out->push_back('"');
  }
  out->push_back('}');
}

void AppendLine(std::string_view name, const Labels& labels, std::string_view extra_name,
                std::string_view extra_value, double value, std::string* out) {
  out->append(name.data(), name.size());
  AppendLabels(labels, extra_name, extra_value, out);
  absl::StrAppend(out, " ", FormatValue(value), "\n");
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
    case MetricType::kUntyped:
      break;
  }
  return "untyped";
}

}  // namespace

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";

  // Shortest digits that round-trip, e.g. "1.2345e+02" -> digits "12345", exponent 2.
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(result.ptr - buf));
  std::string sign;
  if (!sci.empty() && sci.front() == '-') {
    sign = "-";
    sci.remove_prefix(1);
  }
  const size_t e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e)) {
    if (c != '.') digits.push_back(c);
  }
  const int exponent = std::atoi(std::string(sci.substr(e + 1)).c_str());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();

  // Python's repr: plain notation for 1e-4 <= |x| < 1e16, always with a fractional part.
  if (exponent < -4 || exponent >= 16) {
    std::string mantissa = digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&mantissa, ".", digits.substr(1));
    return absl::StrCat(sign, mantissa, TwoDigitExponent(exponent));
  }
  std::string int_part, frac_part;
  if (exponent >= 0) {
    const size_t int_len = static_cast<size_t>(exponent) + 1;
    int_part = digits.substr(0, std::min(int_len, digits.size()));
    int_part.append(int_len - int_part.size(), '0');
    frac_part = digits.size() > int_len ? digits.substr(int_len) : "0";
  } else {
    int_part = "0";
    frac_part = std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  }
  // Go (and prometheus_client, to match it) switch to an exponent past six integer digits.
  if (sign.empty() && int_part.size() > 6) {
    std::string mantissa = absl::StrCat(int_part.substr(0, 1), ".", int_part.substr(1), frac_part);
    while (!mantissa.empty() && (mantissa.back() == '0' || mantissa.back() == '.')) {
      mantissa.pop_back();
    }
    return absl::StrCat(mantissa, TwoDigitExponent(static_cast<int>(int_part.size()) - 1));
  }
  return absl::StrCat(sign, int_part, ".", frac_part);
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

bool IsValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
                    (i > 0 && absl::ascii_isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__" || name == "le") return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_' ||
                    (i > 0 && absl::ascii_isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

void AppendFamily(const FamilySnapshot& family, std::string* out) {
  absl::StrAppend(out, "# HELP ", family.name, " ", EscapeHelp(family.help), "\n");
  absl::StrAppend(out, "# TYPE ", family.name, " ", TypeName(family.type), "\n");
  for (const Sample& sample : family.samples) {
    if (family.type != MetricType::kHistogram) {
      AppendLine(family.name, sample.labels, "", "", sample.value, out);
      continue;
    }
    const HistogramData& h = sample.histogram;
    if (!h.IsValid()) continue;  // a malformed collector sample must not break the whole scrape
    const std::string bucket_name = absl::StrCat(family.name, "_bucket");
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.upper_bounds.size(); ++i) {
      cumulative += h.bucket_counts[i];
      AppendLine(bucket_name, sample.labels, "le", FormatValue(h.upper_bounds[i]),
                 static_cast<double>(cumulative), out);
    }
    cumulative += h.bucket_counts.back();
    AppendLine(bucket_name, sample.labels, "le", "+Inf", static_cast<double>(cumulative), out);
    AppendLine(absl::StrCat(family.name, "_sum"), sample.labels, "", "", h.sum, out);
    AppendLine(absl::StrCat(family.name, "_count"), sample.labels, "", "",
               static_cast<double>(cumulative), out);
  }
}

std::string Serialize(const std::vector<FamilySnapshot>& families) {
  std::string out;
  for (const FamilySnapshot& family : families) AppendFamily(family, &out);
  return out;
}

}  // namespace mambaserve::metrics
