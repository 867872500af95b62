// Session fork: a copy of a conversation that continues on its own. Each fork, and the source,
// must give exactly the tokens of one request holding its whole history, whatever the others do.
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/serving/scheduler_fixture.h"

namespace mambaserve {
namespace {

class SessionForkTest : public SchedulerTest {
 protected:
  static std::vector<int32_t> Concat(std::vector<std::vector<int32_t>> parts) {
    std::vector<int32_t> all;
    for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
    return all;
  }
};

TEST_F(SessionForkTest, ForksDivergeIndependentlyAndEachEqualsOneRequestWithItsHistory) {
  auto s = Make(4);
  ASSERT_TRUE(s->sessions().Create("doc").ok());
  const std::vector<int32_t> document = Prompt(120, 1);
  const Result read = RunAll(*s, {Submit(*s, document, Greedy(4), "doc")})[0];
  ASSERT_TRUE(read.status.ok()) << read.status;

  // Two copies of the resident source (its state is read from its slot).
  absl::StatusOr<SessionInfo> a = s->sessions().Fork("doc", "a");
  absl::StatusOr<SessionInfo> b = s->sessions().Fork("doc", "");
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(a->length, read.usage.session_length);
  EXPECT_EQ(a->location, StateLocation::kHost);  // parked until its first turn
  EXPECT_GT(a->state_bytes, 0);
  EXPECT_FALSE(b->id.empty());

  const std::vector<int32_t> qa = Prompt(9, 2), qb = Prompt(14, 3), qdoc = Prompt(5, 4);
  const std::vector<Result> turns =
      RunAll(*s, {Submit(*s, qa, Greedy(6), "a"), Submit(*s, qb, Greedy(6), b->id),
                  Submit(*s, qdoc, Greedy(6), "doc")});
  const std::vector<int32_t> history = Concat({document, read.tokens});
  EXPECT_EQ(turns[0].tokens, RunAll(*s, {Submit(*s, Concat({history, qa}), Greedy(6))})[0].tokens);
  EXPECT_EQ(turns[1].tokens, RunAll(*s, {Submit(*s, Concat({history, qb}), Greedy(6))})[0].tokens);
  EXPECT_EQ(turns[2].tokens,
            RunAll(*s, {Submit(*s, Concat({history, qdoc}), Greedy(6))})[0].tokens);
  EXPECT_NE(turns[0].tokens, turns[1].tokens);

  // A fork of a fork that is parked shares its state, and continues the same way.
  ASSERT_TRUE(s->sessions().Fork("a", "a2").ok());
  const std::vector<int32_t> more = Prompt(7, 5);
  const Result a_next = RunAll(*s, {Submit(*s, more, Greedy(5), "a")})[0];
  const Result a2_next = RunAll(*s, {Submit(*s, more, Greedy(5), "a2")})[0];
  EXPECT_EQ(a_next.tokens, a2_next.tokens);
}

TEST_F(SessionForkTest, RefusesABusySourceAnUnknownOneAndATakenId) {
  auto s = Make(2);
  ASSERT_TRUE(s->sessions().Create("src").ok());
  ASSERT_TRUE(s->sessions().Create("taken").ok());
  auto stream = Submit(*s, Prompt(10, 1), Greedy(50), "src");
  s->StepForTest();
  EXPECT_TRUE(absl::IsFailedPrecondition(s->sessions().Fork("src", "copy").status()));
  EXPECT_TRUE(absl::IsNotFound(s->sessions().Fork("nowhere", "copy").status()));
  RunAll(*s, {stream});
  EXPECT_TRUE(absl::IsAlreadyExists(s->sessions().Fork("src", "taken").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(s->sessions().Fork("src", "bad id!").status()));
  EXPECT_TRUE(s->sessions().Fork("src", "copy").ok());
}

}  // namespace
}  // namespace mambaserve
