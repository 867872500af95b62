#include "server/metrics/text_format.h"

#include <limits>

#include "gtest/gtest.h"
#include "server/metrics/registry.h"

namespace mambaserve::metrics {
namespace {

TEST(FormatValueTest, MatchesPythonPrometheusClient) {
  // Expected strings are what prometheus_client's floatToGoString produces.
  EXPECT_EQ(FormatValue(0), "0.0");
  EXPECT_EQ(FormatValue(1), "1.0");
  EXPECT_EQ(FormatValue(-3), "-3.0");
  EXPECT_EQ(FormatValue(0.001), "0.001");
  EXPECT_EQ(FormatValue(0.0005), "0.0005");
  EXPECT_EQ(FormatValue(0.00001), "1e-05");
  EXPECT_EQ(FormatValue(1.5e-7), "1.5e-07");
  EXPECT_EQ(FormatValue(2560), "2560.0");
  EXPECT_EQ(FormatValue(123456), "123456.0");
  EXPECT_EQ(FormatValue(1000000), "1e+06");
  EXPECT_EQ(FormatValue(1234567), "1.234567e+06");
  EXPECT_EQ(FormatValue(1500000.25), "1.50000025e+06");
  EXPECT_EQ(FormatValue(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatValue(12.5), "12.5");
  EXPECT_EQ(FormatValue(-1e20), "-1e+20");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(EscapeTest, LabelValuesEscapeBackslashQuoteAndNewline) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(EscapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(EscapeLabelValue("two\nlines"), "two\\nlines");
  EXPECT_EQ(EscapeLabelValue("utf-8 ✓ stays"), "utf-8 ✓ stays");
}

TEST(EscapeTest, HelpEscapesBackslashAndNewlineButNotQuotes) {
  EXPECT_EQ(EscapeHelp("a \"quoted\" \\ word\nnext"), "a \"quoted\" \\\\ word\\nnext");
}

TEST(NameTest, MetricNames) {
  EXPECT_TRUE(IsValidMetricName("vllm:num_requests_running"));
  EXPECT_TRUE(IsValidMetricName("model_name:vllm_generation_tokens:rate1m"));
  EXPECT_TRUE(IsValidMetricName("_x9"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_FALSE(IsValidMetricName("9lives"));
  EXPECT_FALSE(IsValidMetricName("has-dash"));
  EXPECT_FALSE(IsValidMetricName("has space"));
}

TEST(NameTest, LabelNames) {
  EXPECT_TRUE(IsValidLabelName("model_name"));
  EXPECT_TRUE(IsValidLabelName("_private"));
  EXPECT_FALSE(IsValidLabelName("__reserved"));
  EXPECT_FALSE(IsValidLabelName("le"));
  EXPECT_FALSE(IsValidLabelName("with:colon"));
  EXPECT_FALSE(IsValidLabelName("1st"));
  EXPECT_FALSE(IsValidLabelName(""));
}

TEST(ExpositionTest, GoldenCounterGaugeHistogram) {
  Registry registry;
  auto tokens =
      registry.AddCounter("vllm:generation_tokens_total", "Generated tokens.", {"model_name"});
  ASSERT_TRUE(tokens.ok());
  (*tokens)->WithLabels({"m\"1"}).Increment(3);
  auto running = registry.AddGauge("vllm:num_requests_running", "Running.\nSecond line \\ end.",
                                   {"model_name"});
  ASSERT_TRUE(running.ok());
  (*running)->WithLabels({"m\"1"}).Set(2);
  auto ttft = registry.AddHistogram("vllm:time_to_first_token_seconds", "TTFT.", {"model_name"},
                                    {0.1, 1.0, 2.5});
  ASSERT_TRUE(ttft.ok());
  Histogram& h = (*ttft)->WithLabels({"m\"1"});
  h.Observe(0.05);
  h.Observe(0.1);  // on a bound: counts in that bucket (le = less or equal)
  h.Observe(2.0);
  h.Observe(30);
  auto unlabeled = registry.AddGauge("up_like", "No labels.", {});
  ASSERT_TRUE(unlabeled.ok());
  (*unlabeled)->WithLabels({}).Set(1);

  EXPECT_EQ(registry.Serialize(),
            "# HELP vllm:generation_tokens_total Generated tokens.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            "vllm:generation_tokens_total{model_name=\"m\\\"1\"} 3.0\n"
            "# HELP vllm:num_requests_running Running.\\nSecond line \\\\ end.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            "vllm:num_requests_running{model_name=\"m\\\"1\"} 2.0\n"
            "# HELP vllm:time_to_first_token_seconds TTFT.\n"
            "# TYPE vllm:time_to_first_token_seconds histogram\n"
            "vllm:time_to_first_token_seconds_bucket{model_name=\"m\\\"1\",le=\"0.1\"} 2.0\n"
            "vllm:time_to_first_token_seconds_bucket{model_name=\"m\\\"1\",le=\"1.0\"} 2.0\n"
            "vllm:time_to_first_token_seconds_bucket{model_name=\"m\\\"1\",le=\"2.5\"} 3.0\n"
            "vllm:time_to_first_token_seconds_bucket{model_name=\"m\\\"1\",le=\"+Inf\"} 4.0\n"
            "vllm:time_to_first_token_seconds_sum{model_name=\"m\\\"1\"} 32.15\n"
            "vllm:time_to_first_token_seconds_count{model_name=\"m\\\"1\"} 4.0\n"
            "# HELP up_like No labels.\n"
            "# TYPE up_like gauge\n"
            "up_like 1.0\n");
}

TEST(ExpositionTest, HistogramWithoutLabelsGetsOnlyLe) {
  FamilySnapshot family{"h", "help", MetricType::kHistogram, {}};
  Sample sample;
  sample.histogram = HistogramData::WithBounds({1});
  sample.histogram.Observe(0.5);
  family.samples.push_back(sample);
  EXPECT_EQ(Serialize({family}),
            "# HELP h help\n# TYPE h histogram\n"
            "h_bucket{le=\"1.0\"} 1.0\nh_bucket{le=\"+Inf\"} 1.0\nh_sum 0.5\nh_count 1.0\n");
}

TEST(ExpositionTest, MalformedHistogramSampleIsSkipped) {
  FamilySnapshot family{"h", "help", MetricType::kHistogram, {}};
  Sample sample;
  sample.histogram.upper_bounds = {1, 2};
  sample.histogram.bucket_counts = {1};  // wrong length
  family.samples.push_back(sample);
  EXPECT_EQ(Serialize({family}), "# HELP h help\n# TYPE h histogram\n");
}

TEST(ExpositionTest, EmptyFamilyStillHasHelpAndType) {
  Registry registry;
  ASSERT_TRUE(registry.AddCounter("c_total", "c", {"x"}).ok());
  EXPECT_EQ(registry.Serialize(), "# HELP c_total c\n# TYPE c_total counter\n");
}

}  // namespace
}  // namespace mambaserve::metrics
