// Astraea token kernels on the GPU (issue #8 item 2): gather of the selected tokens' rows, scatter
// of their updates back into the layer cache with the relative change Δ the CPU records, the
// skipped-step counters, the head-averaged LSE recorded per token, and the token scores
// (kernels/token_cache.cpp, TokenCache::record_lse / scores / complete). Raw device pointers;
// aux_ops.h is the libtorch boundary.
#pragma once

#include <cstdint>

namespace sparsetune::cuda {

// Element type of the cached activations.
enum class TokenDtype { kFloat32, kBFloat16, kFloat16 };

// out[b, i, :] = x[b, index[b, i], :]; x [B, N, row_bytes] contiguous, index [B, count] int64 in
// [0, N). Copies bytes, so any dtype.
int LaunchGatherTokens(const void* x, void* out, const int64_t* index, int64_t batch,
                       int64_t tokens, int64_t count, int64_t row_bytes, void* stream);

// cache[b, index[b, i], :] = update[b, i, :] (both `dtype`, [B, N, C] and [B, count, C]). When
// `delta` ([B, N] float32) is not null, delta[b, index[b, i]] = ||new - old||_2 / max(||old||_2,
// 1e-12) over the row in float32, as TokenCache::complete records it. Indices of one batch row
// must be distinct (a selection is).
int LaunchScatterTokens(void* cache, const void* update, const int64_t* index, float* delta,
                        int64_t batch, int64_t tokens, int64_t count, int64_t channels,
                        TokenDtype dtype, void* stream);

// skipped[b, j] = 0 for the selected j = index[b, i], skipped[b, j] + 1 for the others
// (skipped [B, N] int64).
int LaunchUpdateSkipped(int64_t* skipped, const int64_t* index, int64_t batch, int64_t tokens,
                        int64_t count, void* stream);

// lse_tokens[b, q_index[b, i]] = mean over h of lse[b, h, i]; lse [B, H, Nq] float32,
// lse_tokens [B, N] float32 (other tokens untouched).
int LaunchRecordLse(const float* lse, const int64_t* q_index, float* lse_tokens, int64_t batch,
                    int64_t heads, int64_t q_rows, int64_t tokens, void* stream);

// TokenCache::scores in float64: per batch row, sig = lse * delta min-max normalised over the
// video tokens [video_offset, video_offset + video_tokens), plus penalty_weight *
// exp(min(skipped, max_skip_exponent)); text tokens +inf. lse, delta [B, N] float32, skipped
// [B, N] int64, scores [B, N] float64.
int LaunchTokenScores(const float* lse, const float* delta, const int64_t* skipped, double* scores,
                      int64_t batch, int64_t tokens, int64_t video_offset, int64_t video_tokens,
                      double penalty_weight, int64_t max_skip_exponent, void* stream);

}  // namespace sparsetune::cuda
