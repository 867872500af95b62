#include "server/metrics/collection.h"

#include <iterator>
#include <utility>

#include "prometheus/text_serializer.h"

namespace mambaserve::metrics {

Collection::Collection()
    : registry_(
          std::make_shared<prometheus::Registry>(prometheus::Registry::InsertBehavior::Throw)),
      label_overflow_(&prometheus::BuildCounter()
                           .Name("mambaserve_metric_label_overflow_total")
                           .Help("Label combinations merged into the __overflow__ series because a "
                                 "family reached its series cap.")
                           .Register(*registry_)) {}

void Collection::AddCollector(std::shared_ptr<const prometheus::Collectable> collector) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::vector<prometheus::MetricFamily> Collection::Collect() const {
  std::vector<prometheus::MetricFamily> out = registry_->Collect();
  std::vector<std::shared_ptr<const prometheus::Collectable>> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    collectors = collectors_;
  }
  for (const auto& collector : collectors) {
    std::vector<prometheus::MetricFamily> families = collector->Collect();
    out.insert(out.end(), std::make_move_iterator(families.begin()),
               std::make_move_iterator(families.end()));
  }
  return out;
}

std::string Collection::Serialize() const {
  return prometheus::TextSerializer().Serialize(Collect());
}

}  // namespace mambaserve::metrics
