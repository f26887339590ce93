// The parallel block driver: errors from any worker or from a worker's setup reach the caller,
// the host's interrupt poll stops a call, block sizes follow the request and the problem.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include "hardmine/tiling.hpp"
#include "reference.hpp"

using namespace hardmine;

namespace {

struct SlowHandler {  // counts the tiles it is handed, 2 ms each
  std::atomic<int64_t>* tiles;
  struct State {};
  State begin(int64_t, int64_t) const { return {}; }
  void consume(State&, int64_t, int64_t, int64_t, int64_t, const float*, int64_t) const {
    tiles->fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  void finish(State&, int64_t, int64_t) const {}
};

}  // namespace

TEST_CASE("BlockLoop: a worker's exception reaches the caller, on one thread and on several") {
  for (int threads : {1, 2, 4}) {
    for (int64_t failing : {0, 5, 15}) {
      CAPTURE(threads);
      CAPTURE(failing);
      try {
        fail_in_block(16, failing, threads);
        FAIL("no exception reached the caller");
      } catch (const std::runtime_error& error) {
        CHECK(std::string(error.what()) == "worker failure injected in query block " + std::to_string(failing));
      }
    }
  }
  CHECK_NOTHROW(fail_in_block(16, 99, 2));  // no failing block: the call completes
}

TEST_CASE("BlockLoop: a failure while building a worker's state is reported like any error") {
  RunOptions options;
  BlockLoop loop(options);
  std::atomic<int> worked{0};
  CHECK_THROWS_AS(loop.run(
                      2, 8, []() -> int { throw std::bad_alloc(); }, [&](int&, int64_t) { worked.fetch_add(1); }),
                  std::bad_alloc);
  CHECK(worked.load() == 0);
}

TEST_CASE("BlockLoop: the host's interrupt poll stops the call with Interrupted, early") {
  const testing::Matrix q = testing::random_matrix(100, 2, 1), c = testing::random_matrix(10, 2, 2);
  std::atomic<int64_t> tiles{0};
  SlowHandler handler{&tiles};
  RunOptions options;
  options.blocks = {1, 1};  // 1000 tiles of 2 ms: 2 s uninterrupted
  options.num_threads = 1;
  int polls = 0;
  options.interrupted = [&] { return ++polls >= 2; };
  CHECK_THROWS_AS(for_each_score_tile(q.view(), c.view(), RowScales{}, options, handler), Interrupted);
  CHECK(polls == 2);
  CHECK(tiles.load() < 1000);
  CHECK(tiles.load() > 0);
}

TEST_CASE("for_each_score_tile: queries and candidates of different widths are refused") {
  const testing::Matrix q = testing::random_matrix(3, 4, 1), c = testing::random_matrix(3, 5, 2);
  std::atomic<int64_t> tiles{0};
  SlowHandler handler{&tiles};
  CHECK_THROWS_AS(for_each_score_tile(q.view(), c.view(), RowScales{}, RunOptions{}, handler),
                  std::invalid_argument);
  CHECK(tiles.load() == 0);
}

TEST_CASE("choose_block_sizes: requests kept, choices bounded by the problem") {
  const BlockSizes kept = choose_block_sizes(10000, 50000, 64, 2, BlockSizes{16, 512});
  CHECK(kept.query_rows == 16);
  CHECK(kept.candidate_rows == 512);
  const BlockSizes chosen = choose_block_sizes(10000, 50000, 64, 2, BlockSizes{});
  CHECK(chosen.query_rows >= 8);
  CHECK(chosen.query_rows <= 1024);
  CHECK(chosen.candidate_rows >= 256);
  CHECK(chosen.candidate_rows % 64 == 0);
  const BlockSizes small = choose_block_sizes(3, 5, 64, 8, BlockSizes{});
  CHECK(small.query_rows == 3);
  CHECK(small.candidate_rows == 5);
  const BlockSizes empty = choose_block_sizes(0, 0, 64, 2, BlockSizes{});
  CHECK(empty.query_rows == 1);
  CHECK(empty.candidate_rows == 1);
}
