// pybind11 glue for the CPU core: the module's functions. NumPy arrays -> views, the checks that
// keep a direct caller from crashing the process, GIL release and Ctrl-C polling: arguments.hpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "hardmine/build_info.hpp"
#include "hardmine/certified.hpp"
#include "hardmine/engine.hpp"
#include "hardmine/tiling.hpp"

namespace py = pybind11;
using namespace hardmine_bindings;  // NOLINT: the argument helpers of arguments.hpp

namespace {

void check_int8_dims(const MatrixView& q, const MatrixView& c) {
  check_dims(q, c);
  if (q.cols > hardmine::kMaxInt8Dim) {
    throw py::value_error("int8 scoring takes d <= " + std::to_string(hardmine::kMaxInt8Dim));
  }
}

hardmine::RowScales int8_scales(const std::optional<py::array>& query_scales,
                                const std::optional<py::array>& candidate_scales, int64_t queries, int64_t candidates) {
  hardmine::RowScales scales{contiguous_input<float>(query_scales, queries, "query_scales"),
                             contiguous_input<float>(candidate_scales, candidates, "candidate_scales")};
  if ((scales.queries == nullptr) != (scales.candidates == nullptr)) {
    throw py::value_error("query_scales and candidate_scales come together");
  }
  return scales;
}

hardmine::Codes as_codes(const std::string& codes) {
  if (codes == "int8") return hardmine::Codes::Int8;
  if (codes == "bf16") return hardmine::Codes::Bf16;
  throw py::value_error("codes must be 'int8' or 'bf16'; got '" + codes + "'");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "hardmine CPU core (C++17, OpenMP, BLAS score tiles)";

  m.def(
      "topk",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         int64_t k, std::optional<py::array> query_scales, std::optional<py::array> candidate_scales,
         std::optional<py::array> exclude_indptr, std::optional<py::array> exclude_indices,
         std::optional<py::array> query_groups, std::optional<py::array> candidate_groups,
         py::array out_indices, py::array out_scores, int64_t query_rows, int64_t candidate_rows,
         int num_threads, std::optional<py::array> candidate_keys,
         std::optional<py::array> excluded_key_indptr, std::optional<py::array> excluded_key_indices,
         std::optional<py::array> upper_bounds, std::optional<py::array> lower_bounds,
         bool exclusive_bounds, std::vector<py::array> count_bounds, std::vector<bool> count_below,
         std::optional<py::array> out_counts) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_dims(q, c);
        if (k < 1) throw py::value_error("k must be >= 1; got " + std::to_string(k));
        hardmine::RowScales scales{contiguous_input<float>(query_scales, q.rows, "query_scales"),
                                   contiguous_input<float>(candidate_scales, c.rows, "candidate_scales")};
        auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups, candidate_groups,
                                      q.rows, c.rows);
        add_keys(exclusion, candidate_keys, excluded_key_indptr, excluded_key_indices, q.rows, c.rows);
        const auto bounds = as_bounds(upper_bounds, lower_bounds, exclusive_bounds, q.rows);
        const auto tallies = as_tallies(count_bounds, count_below, out_counts, q.rows);
        int64_t* indices = output<int64_t>(out_indices, {q.rows, k}, "out_indices");
        float* scores = output<float>(out_scores, {q.rows, k}, "out_scores");
        const auto options = run_options(query_rows, candidate_rows, num_threads);
        run_released([&] { hardmine::topk(q, c, k, scales, exclusion, bounds, tallies, options, indices, scores); });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("k"), py::arg("query_scales"), py::arg("candidate_scales"), py::arg("exclude_indptr"),
      py::arg("exclude_indices"), py::arg("query_groups"), py::arg("candidate_groups"),
      py::arg("out_indices"), py::arg("out_scores"), py::arg("query_rows") = 0,
      py::arg("candidate_rows") = 0, py::arg("num_threads") = 0, py::arg("candidate_keys") = py::none(),
      py::arg("excluded_key_indptr") = py::none(), py::arg("excluded_key_indices") = py::none(),
      py::arg("upper_bounds") = py::none(), py::arg("lower_bounds") = py::none(),
      py::arg("exclusive_bounds") = false, py::arg("count_bounds") = std::vector<py::array>{},
      py::arg("count_below") = std::vector<bool>{}, py::arg("out_counts") = py::none(),
      "Exact blocked top-k into preallocated outputs. Use hardmine.topk / hardmine.mine instead.");

  m.def(
      "sample",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         int64_t count, uint64_t seed, double temperature, int64_t first_row, int64_t first_id,
         std::optional<py::array> query_scales, std::optional<py::array> candidate_scales,
         std::optional<py::array> exclude_indptr, std::optional<py::array> exclude_indices,
         std::optional<py::array> query_groups, std::optional<py::array> candidate_groups,
         py::array out_indices, py::array out_scores, py::array out_priorities, int64_t query_rows,
         int64_t candidate_rows, int num_threads, std::optional<py::array> candidate_keys,
         std::optional<py::array> excluded_key_indptr, std::optional<py::array> excluded_key_indices,
         std::optional<py::array> upper_bounds, std::optional<py::array> lower_bounds,
         bool exclusive_bounds, std::vector<py::array> count_bounds, std::vector<bool> count_below,
         std::optional<py::array> out_counts, int64_t top_k, std::optional<py::array> out_top_indices,
         std::optional<py::array> out_top_scores) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_dims(q, c);
        if (top_k < 0 || (top_k > 0) != (out_top_indices.has_value() && out_top_scores.has_value())) {
          throw py::value_error("top_k must be >= 0, with out_top_indices and out_top_scores exactly when > 0");
        }
        if (count < 1) throw py::value_error("count must be >= 1; got " + std::to_string(count));
        if (!(temperature >= 0) || std::isinf(temperature)) {
          throw py::value_error("temperature must be finite and >= 0 (0: uniform draws)");
        }
        hardmine::RowScales scales{contiguous_input<float>(query_scales, q.rows, "query_scales"),
                                   contiguous_input<float>(candidate_scales, c.rows, "candidate_scales")};
        auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups, candidate_groups,
                                      q.rows, c.rows);
        add_keys(exclusion, candidate_keys, excluded_key_indptr, excluded_key_indices, q.rows, c.rows);
        const auto bounds = as_bounds(upper_bounds, lower_bounds, exclusive_bounds, q.rows);
        const auto tallies = as_tallies(count_bounds, count_below, out_counts, q.rows);
        int64_t* indices = output<int64_t>(out_indices, {q.rows, count}, "out_indices");
        float* scores = output<float>(out_scores, {q.rows, count}, "out_scores");
        double* priorities = output<double>(out_priorities, {q.rows, count}, "out_priorities");
        int64_t* top_indices =
            top_k > 0 ? output<int64_t>(*out_top_indices, {q.rows, top_k}, "out_top_indices") : nullptr;
        float* top_scores = top_k > 0 ? output<float>(*out_top_scores, {q.rows, top_k}, "out_top_scores") : nullptr;
        const hardmine::SampleRule rule{seed, temperature, first_row, first_id};
        const auto options = run_options(query_rows, candidate_rows, num_threads);
        run_released([&] {
          hardmine::sample(q, c, count, scales, exclusion, bounds, tallies, rule, options, indices, scores,
                           priorities, top_k, top_indices, top_scores);
        });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("count"), py::arg("seed"), py::arg("temperature"), py::arg("first_row"), py::arg("first_id"),
      py::arg("query_scales"), py::arg("candidate_scales"), py::arg("exclude_indptr"),
      py::arg("exclude_indices"), py::arg("query_groups"), py::arg("candidate_groups"),
      py::arg("out_indices"), py::arg("out_scores"), py::arg("out_priorities"), py::arg("query_rows") = 0,
      py::arg("candidate_rows") = 0, py::arg("num_threads") = 0, py::arg("candidate_keys") = py::none(),
      py::arg("excluded_key_indptr") = py::none(), py::arg("excluded_key_indices") = py::none(),
      py::arg("upper_bounds") = py::none(), py::arg("lower_bounds") = py::none(),
      py::arg("exclusive_bounds") = false, py::arg("count_bounds") = std::vector<py::array>{},
      py::arg("count_below") = std::vector<bool>{}, py::arg("out_counts") = py::none(), py::arg("top_k") = 0,
      py::arg("out_top_indices") = py::none(), py::arg("out_top_scores") = py::none(),
      "Seeded draws without replacement over every admissible candidate. Use hardmine.mine instead.");

  m.def(
      "uniform_draw", &hardmine::uniform_draw, py::arg("seed"), py::arg("row"), py::arg("id"),
      "The core's seeded uniform (0, 1) draw, for the test suite (equals hardmine._draws.uniform).");

  m.def(
      "violations",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         const py::array& positive_scores, float margin, std::optional<py::array> query_scales,
         std::optional<py::array> candidate_scales, std::optional<py::array> exclude_indptr,
         std::optional<py::array> exclude_indices, std::optional<py::array> query_groups,
         std::optional<py::array> candidate_groups, py::array out_count, py::array out_hinge_sum,
         py::array out_max, py::array out_argmax, int64_t query_rows, int64_t candidate_rows,
         int num_threads, std::optional<py::array> out_best_scores) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_dims(q, c);
        const float* positives =
            contiguous_input<float>(std::optional<py::array>(positive_scores), q.rows, "positive_scores");
        hardmine::RowScales scales{contiguous_input<float>(query_scales, q.rows, "query_scales"),
                                   contiguous_input<float>(candidate_scales, c.rows, "candidate_scales")};
        const auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups,
                                            candidate_groups, q.rows, c.rows);
        int64_t* count = output<int64_t>(out_count, {q.rows}, "out_count");
        double* hinge_sum = output<double>(out_hinge_sum, {q.rows}, "out_hinge_sum");
        float* max_hinge = output<float>(out_max, {q.rows}, "out_max");
        int64_t* argmax = output<int64_t>(out_argmax, {q.rows}, "out_argmax");
        float* best_scores =
            out_best_scores ? output<float>(*out_best_scores, {q.rows}, "out_best_scores") : nullptr;
        const auto options = run_options(query_rows, candidate_rows, num_threads);
        run_released([&] {
          hardmine::violations(q, c, positives, margin, scales, exclusion, options, count, hinge_sum,
                               max_hinge, argmax, best_scores);
        });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("positive_scores"), py::arg("margin"), py::arg("query_scales"),
      py::arg("candidate_scales"), py::arg("exclude_indptr"), py::arg("exclude_indices"),
      py::arg("query_groups"), py::arg("candidate_groups"), py::arg("out_count"),
      py::arg("out_hinge_sum"), py::arg("out_max"), py::arg("out_argmax"), py::arg("query_rows") = 0,
      py::arg("candidate_rows") = 0, py::arg("num_threads") = 0, py::arg("out_best_scores") = py::none(),
      "Blocked margin violations into preallocated outputs. Use hardmine.violations instead.");

  m.def(
      "topk_int8",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         int64_t k, std::optional<py::array> query_scales, std::optional<py::array> candidate_scales,
         std::optional<py::array> exclude_indptr, std::optional<py::array> exclude_indices,
         std::optional<py::array> query_groups, std::optional<py::array> candidate_groups,
         py::array out_indices, py::array out_scores, py::array out_shortlist, int num_threads,
         std::optional<py::array> upper_bounds, std::optional<py::array> lower_bounds, bool exclusive_bounds,
         std::vector<py::array> count_bounds, std::vector<bool> count_below, std::optional<py::array> out_counts,
         std::optional<py::array> candidate_keys, std::optional<py::array> excluded_key_indptr,
         std::optional<py::array> excluded_key_indices, const std::string& codes) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_int8_dims(q, c);
        const auto kind = as_codes(codes);
        if (k < 1) throw py::value_error("k must be >= 1; got " + std::to_string(k));
        const auto scales = int8_scales(query_scales, candidate_scales, q.rows, c.rows);
        auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups, candidate_groups, q.rows, c.rows);
        add_keys(exclusion, candidate_keys, excluded_key_indptr, excluded_key_indices, q.rows, c.rows);
        int64_t* indices = output<int64_t>(out_indices, {q.rows, k}, "out_indices");
        float* scores = output<float>(out_scores, {q.rows, k}, "out_scores");
        int64_t* shortlist = output<int64_t>(out_shortlist, {q.rows}, "out_shortlist");
        const auto bounds = as_bounds(upper_bounds, lower_bounds, exclusive_bounds, q.rows);
        const auto tallies = as_tallies(count_bounds, count_below, out_counts, q.rows);
        const auto options = run_options(0, 0, num_threads);
        run_released([&] {
          hardmine::topk_int8(q, c, k, scales, exclusion, bounds, tallies, options, indices, scores, shortlist, kind);
        });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("k"), py::arg("query_scales"), py::arg("candidate_scales"), py::arg("exclude_indptr"),
      py::arg("exclude_indices"), py::arg("query_groups"), py::arg("candidate_groups"), py::arg("out_indices"),
      py::arg("out_scores"), py::arg("out_shortlist"), py::arg("num_threads") = 0,
      py::arg("upper_bounds") = py::none(), py::arg("lower_bounds") = py::none(),
      py::arg("exclusive_bounds") = false, py::arg("count_bounds") = std::vector<py::array>{},
      py::arg("count_below") = std::vector<bool>{}, py::arg("out_counts") = py::none(),
      py::arg("candidate_keys") = py::none(), py::arg("excluded_key_indptr") = py::none(),
      py::arg("excluded_key_indices") = py::none(), py::arg("codes") = "int8",
      "Certified int8 top-k into preallocated outputs (rows with out_shortlist -1 are left to the exact "
      "engine). Use hardmine.topk(precision='int8') instead.");

  m.def(
      "violations_int8",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         const py::array& positive_scores, float margin, std::optional<py::array> query_scales,
         std::optional<py::array> candidate_scales, std::optional<py::array> exclude_indptr,
         std::optional<py::array> exclude_indices, std::optional<py::array> query_groups,
         std::optional<py::array> candidate_groups, py::array out_count, py::array out_hinge_sum,
         py::array out_best_scores, py::array out_argmax, py::array out_shortlist, int num_threads,
         const std::string& codes) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_int8_dims(q, c);
        const float* positives =
            contiguous_input<float>(std::optional<py::array>(positive_scores), q.rows, "positive_scores");
        const auto scales = int8_scales(query_scales, candidate_scales, q.rows, c.rows);
        const auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups, candidate_groups,
                                            q.rows, c.rows);
        int64_t* count = output<int64_t>(out_count, {q.rows}, "out_count");
        double* hinge_sum = output<double>(out_hinge_sum, {q.rows}, "out_hinge_sum");
        float* best_scores = output<float>(out_best_scores, {q.rows}, "out_best_scores");
        int64_t* argmax = output<int64_t>(out_argmax, {q.rows}, "out_argmax");
        int64_t* shortlist = output<int64_t>(out_shortlist, {q.rows}, "out_shortlist");
        const auto kind = as_codes(codes);
        const auto options = run_options(0, 0, num_threads);
        run_released([&] {
          hardmine::violations_int8(q, c, positives, margin, scales, exclusion, options, count, hinge_sum,
                                    best_scores, argmax, shortlist, kind);
        });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("positive_scores"), py::arg("margin"), py::arg("query_scales"), py::arg("candidate_scales"),
      py::arg("exclude_indptr"), py::arg("exclude_indices"), py::arg("query_groups"), py::arg("candidate_groups"),
      py::arg("out_count"), py::arg("out_hinge_sum"), py::arg("out_best_scores"), py::arg("out_argmax"),
      py::arg("out_shortlist"), py::arg("num_threads") = 0, py::arg("codes") = "int8",
      "Certified int8 violations into preallocated outputs (rows with out_shortlist -1 are left to the exact "
      "engine). Use hardmine.violations(precision='int8') instead.");

  m.def(
      "draw_exact",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         int64_t count, uint64_t seed, double temperature, int64_t first_row, int64_t first_id,
         std::optional<py::array> query_scales,
         std::optional<py::array> candidate_scales, std::optional<py::array> exclude_indptr,
         std::optional<py::array> exclude_indices, std::optional<py::array> query_groups,
         std::optional<py::array> candidate_groups, std::optional<py::array> upper_bounds,
         std::optional<py::array> lower_bounds, bool exclusive_bounds, py::array out_indices, py::array out_scores,
         py::array out_priorities, py::array out_scored, int num_threads, const std::string& codes,
         std::optional<py::array> candidate_keys, std::optional<py::array> excluded_key_indptr,
         std::optional<py::array> excluded_key_indices) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_int8_dims(q, c);
        if (count < 1) throw py::value_error("count must be >= 1; got " + std::to_string(count));
        if (!(temperature >= 0) || std::isinf(temperature)) {
          throw py::value_error("temperature must be finite and >= 0 (0: uniform draws)");
        }
        const auto kind = as_codes(codes);
        const auto scales = int8_scales(query_scales, candidate_scales, q.rows, c.rows);
        auto exclusion = as_exclusion(exclude_indptr, exclude_indices, query_groups, candidate_groups, q.rows, c.rows);
        add_keys(exclusion, candidate_keys, excluded_key_indptr, excluded_key_indices, q.rows, c.rows);
        const auto bounds = as_bounds(upper_bounds, lower_bounds, exclusive_bounds, q.rows);
        int64_t* indices = output<int64_t>(out_indices, {q.rows, count}, "out_indices");
        float* scores = output<float>(out_scores, {q.rows, count}, "out_scores");
        double* priorities = output<double>(out_priorities, {q.rows, count}, "out_priorities");
        int64_t* scored = output<int64_t>(out_scored, {q.rows}, "out_scored");
        const hardmine::SampleRule rule{seed, temperature, first_row, first_id};
        const auto options = run_options(0, 0, num_threads);
        run_released([&] {
          if (temperature > 0) {
            hardmine::draw_softmax_certified(q, c, count, scales, exclusion, bounds, rule, options, indices, scores,
                                             priorities, scored, kind);
          } else {
            hardmine::draw_uniform_exact(q, c, count, scales, exclusion, bounds, rule, options, indices, scores,
                                         priorities, scored);
          }
        });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("count"), py::arg("seed"), py::arg("temperature"), py::arg("first_row"), py::arg("first_id"),
      py::arg("query_scales"), py::arg("candidate_scales"), py::arg("exclude_indptr"), py::arg("exclude_indices"),
      py::arg("query_groups"), py::arg("candidate_groups"), py::arg("upper_bounds"), py::arg("lower_bounds"),
      py::arg("exclusive_bounds"), py::arg("out_indices"), py::arg("out_scores"), py::arg("out_priorities"),
      py::arg("out_scored"), py::arg("num_threads") = 0, py::arg("codes") = "int8",
      py::arg("candidate_keys") = py::none(), py::arg("excluded_key_indptr") = py::none(),
      py::arg("excluded_key_indices") = py::none(),
      "The sampler's seeded draws with exact scores: uniform (temperature 0) visiting candidates by priority, "
      "softmax through the certified screen (codes); rows with out_scored -1 are left to the sampler. Use "
      "hardmine.mine(strategy='random' or 'softmax', precision='int8' or 'bf16') instead.");

  m.def(
      "_int8_bounds",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         std::optional<py::array> query_scales, std::optional<py::array> candidate_scales, py::array out_lower,
         py::array out_upper, const std::string& codes) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_int8_dims(q, c);
        const auto scales = int8_scales(query_scales, candidate_scales, q.rows, c.rows);
        double* lower = output<double>(out_lower, {q.rows, c.rows}, "out_lower");
        double* upper = output<double>(out_upper, {q.rows, c.rows}, "out_upper");
        const auto kind = as_codes(codes);
        run_released([&] { hardmine::int8_bounds(q, c, scales, lower, upper, kind); });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("query_scales"), py::arg("candidate_scales"), py::arg("out_lower"), py::arg("out_upper"),
      py::arg("codes") = "int8",
      "Test-suite diagnostic: every pair's certified int8 or bf16 score bounds, as topk_int8 screens them.");

  m.def("certified_int8_native", &hardmine::certified_int8_native,
        "True when this CPU runs the int8 path's AVX-512 VNNI kernel.");
  m.def("certified_bf16_native", &hardmine::certified_bf16_native,
        "True when this CPU runs the bf16 path's AVX512_BF16 kernel.");

  m.def(
      "similarity",
      [](const py::array& queries, int queries_dtype, const py::array& candidates, int candidates_dtype,
         std::optional<py::array> query_scales, std::optional<py::array> candidate_scales,
         py::array out, int64_t query_rows, int64_t candidate_rows, int num_threads) {
        const MatrixView q = as_view(queries, queries_dtype, "queries");
        const MatrixView c = as_view(candidates, candidates_dtype, "candidates");
        check_dims(q, c);
        hardmine::RowScales scales{contiguous_input<float>(query_scales, q.rows, "query_scales"),
                                   contiguous_input<float>(candidate_scales, c.rows, "candidate_scales")};
        float* dense = output<float>(out, {q.rows, c.rows}, "out");
        const auto options = run_options(query_rows, candidate_rows, num_threads);
        run_released([&] { hardmine::similarity(q, c, scales, options, dense); });
      },
      py::arg("queries"), py::arg("queries_dtype"), py::arg("candidates"), py::arg("candidates_dtype"),
      py::arg("query_scales"), py::arg("candidate_scales"), py::arg("out"), py::arg("query_rows") = 0,
      py::arg("candidate_rows") = 0, py::arg("num_threads") = 0,
      "Dense score matrix into a preallocated output. Use hardmine.similarity instead.");

  m.def(
      "block_sizes",
      [](int64_t queries, int64_t candidates, int64_t dim, int num_threads) {
        const auto blocks = hardmine::choose_block_sizes(
            queries, candidates, dim, num_threads > 0 ? num_threads : hardmine::max_threads(), {});
        return py::make_tuple(blocks.query_rows, blocks.candidate_rows);
      },
      py::arg("queries"), py::arg("candidates"), py::arg("dim"), py::arg("num_threads") = 0,
      "The (query_rows, candidate_rows) the core picks for a problem shape.");

  m.def(
      "worker_threads", [](int requested) { return hardmine::resolve_threads(requested); },
      py::arg("requested") = 0,
      "Threads a call would use: the request (0: every core), 1 in a child forked after a parallel region.");

  m.def(
      "_fail_in_block",
      [](int64_t num_blocks, int64_t failing_block, int num_threads) {
        py::gil_scoped_release release;
        hardmine::fail_in_block(num_blocks, failing_block, num_threads);
      },
      py::arg("num_blocks"), py::arg("failing_block"), py::arg("num_threads") = 0,
      "Test-suite diagnostic: a worker throws in one block; the error must reach the caller.");

  py::dict info;
  info["blas"] = hardmine::blas_info();
  info["openmp"] = hardmine::has_openmp();
  info["max_threads"] = hardmine::max_threads();
  info["simd"] = hardmine::simd_info();
  info["compiler"] = HARDMINE_COMPILER;
  info["cuda_built"] = HARDMINE_CUDA_BUILT != 0;
  info["cuda_reason"] = HARDMINE_CUDA_REASON;
  m.attr("BUILD_INFO") = info;
}
