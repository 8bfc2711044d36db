// Forward kernel of ms_deform_attn: one group of G lanes per (batch, query, head) (cuda_common.cuh).
// Per batch of kBatch samples a lane first reads the precomputed corner indices and weights, then
// issues all 4 * kBatch gathers, then does the math. Locations, weights and accumulation are fp32
// (fp64 for fp64). Every output element is written by exactly one lane (no zero-fill pass).
#include <ATen/ops/zeros.h>

#include <map>
#include <mutex>
#include <tuple>

#include "cuda_common.cuh"
#include "cuda_launch.h"

namespace msda {
namespace {

// Shared-memory slot table: a group of G lanes keeps one slot per sample of its current chunk
// (fwd_chunk), and every lane of the group reads them back. A slot is the four corner rows (-1 =
// zero) and their weights (attention weight x bilinear weight), in two arrays indexed [warp][slot]
// [group within the warp], so that the warp's groups read their slot i from consecutive 16-byte
// entries (with one contiguous table per group, slot i of every group of a warp fell into the same
// banks: 8-way conflicts for G = 4).
template <typename A> struct alignas(16) CornerWeights {
  A w[4];
};

template <typename A, int SLOTS> struct SlotTable {
  int4 rows[SLOTS];
  CornerWeights<A> weights[SLOTS];
};

// The calling lane's group within its warp.
__device__ __forceinline__ int group_in_warp(int log2g) { return static_cast<int>((threadIdx.x & 31) >> log2g); }

// Index of slot i of group `group` (within the calling lane's warp; chunk slots per group).
__device__ __forceinline__ int slot_index(int log2g, int chunk, int i, int group) {
  return ((static_cast<int>(threadIdx.x >> 5) * chunk + i) << (5 - log2g)) + group;
}

// Samples per chunk of a group: at least one per lane and kBatch; with compile-time shapes all of a
// group's samples (one table fill, their location loads in flight together).
__host__ __device__ constexpr int fwd_chunk(int log2g, int samples) {
  const int least = (1 << log2g) > kBatch ? 1 << log2g : kBatch;
  return least > samples ? least : samples;
}
// Samples of a chunk whose corners one lane computes: chunk / G rounded up (run-time shapes: the
// chunk is max(G, kBatch) samples, at most kBatch per lane).
__host__ __device__ constexpr int fwd_per_lane(int log2g, int samples) {
  return log2g >= 0 ? (fwd_chunk(log2g, samples) + (1 << log2g) - 1) >> log2g : kBatch;
}

// The (x, y) location of sample j: one 8-byte load (16 for fp64; the locations are aligned to a pair).
template <typename A> using Pair = std::conditional_t<std::is_same_v<A, double>, double2, float2>;
// NA: a load that does not allocate in the L1 (fp32 locations and weights; streaming, below).
template <bool NA, typename A>
__device__ __forceinline__ Pair<A> load_location(const A* p, int j) {
  const Pair<A>* at = reinterpret_cast<const Pair<A>*>(p) + j;
  if constexpr (NA && std::is_same_v<A, float>) {
    float2 v;
    asm("ld.global.nc.L1::no_allocate.v2.f32 {%0, %1}, [%2];" : "=f"(v.x), "=f"(v.y) : "l"(at));
    return v;
  } else {
    return __ldg(at);
  }
}
// The attention weight at p.
template <bool NA, typename A>
__device__ __forceinline__ A load_weight(const A* p) {
  if constexpr (NA && std::is_same_v<A, float>) {
    float v;
    asm("ld.global.nc.L1::no_allocate.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
  } else {
    return __ldg(p);
  }
}

// Slots of a block's table: compile-time shapes exactly their chunk per group, the run-time variant
// the largest chunk of any group size.
__host__ __device__ constexpr int fwd_slots(int levels, int points, int log2g, int threads = kThreads) {
  return levels > 0 && log2g >= 0 ? (threads >> log2g) * fwd_chunk(log2g, levels * points) : threads * kBatch;
}

// Region order (version 43; the one-level compile-time kernels with 32-bit coordinates, the
// extractor's): H heads per chunk (MSDA_FWD_REGION_HEADS for 16-bit values, _FP32 for fp32; 0 = the
// grid of small blocks). One block of kRegionThreads threads per SM owns a contiguous range of the
// groups taken in chunk order (batch, chunk of H heads, query, head within the chunk), so that the
// SM's L1 holds the value rows of H heads around a band of adjacent queries (L1 hit rate 11 -> 80 %
// for the extractor in bf16). Its warps take the range's warp-sized pieces in turn. H = 2 keeps a
// quarter warp's locations, weights and output row contiguous (one query, two heads); with fp32
// rows the L1 holds the rows of one head (H = 1) only.
#ifndef MSDA_FWD_REGION_HEADS
#define MSDA_FWD_REGION_HEADS 2
#endif
#ifndef MSDA_FWD_REGION_HEADS_FP32
#define MSDA_FWD_REGION_HEADS_FP32 1
#endif
#ifndef MSDA_FWD_REGION_THREADS
#define MSDA_FWD_REGION_THREADS 1024
#endif
constexpr int kRegionThreads = MSDA_FWD_REGION_THREADS;
// Streaming (the operator's `streaming`: no backward reads the locations and weights, as in
// inference): the region kernels load them without allocating in the L1, which keeps more of the
// value rows that the gathers reuse, and, measured though not documented, lets the L2 evict them
// first (with an explicit evict-normal policy the gain is gone; an evict-first policy alone gives the
// part with inputs out of L2). Extractor bf16 forward -2 % hot, -5 % with its inputs out of L2 (0.0293
// / 0.0301 against 0.0300 / 0.0316 ms, session 28 runs C-F). Not in training: the backward reads the
// locations and weights again and found them evicted (fwd+bwd +2 %). Output stores as a stream
// (`st.global.cs`) took the rotated forward to 0.0297 ms but cost the output projection that reads
// the output more (forward and projection +2 %, run F). MSDA_FWD_STREAMING=0: the training kernels
// for every call.
#ifndef MSDA_FWD_STREAMING
#define MSDA_FWD_STREAMING 1
#endif
__device__ __forceinline__ unsigned load_relaxed(const unsigned* p) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
struct Region {
  FastDiv by_chunks;  // x / (M / H)
  int chunks;         // M / H
  unsigned* balance;  // balanced ranges (below): the words of this stream and shape, or null (equal shares)
  int set;            // the set of words this call writes
};

// Balanced ranges (MSDA_FWD_BALANCE, version 46): the ranges' costs differ with the locations (the
// extractor's queries of the 32 x 32 grid, two value pixels apart, hit the L1 less than the others:
// their SMs ran 7-8 % over the mean), so the ranges' bounds follow the durations (SM cycles) that
// earlier calls of the stream and shape measured. Call j runs on the bounds B_j, records its
// blocks' durations D_j, and once it has waited for call j - 1, sets B_j+2 from B_j-1 and D_j-1:
// bound k moves halfway from its old place to where the old ranges' measured cost, taken as even
// within each range, reaches k / blocks of the total. Each block sets its own first bound, in the
// warp that has the fewest pieces, after them. Call j's words are set j % 4 (B_j, written by call
// j - 2, and D_j): a call may start (programmatic launch) while the one before it runs, never
// before the one before that is done. Bounds without a full record (the first calls) are equal
// shares. Every group is computed by one lane in the same way whatever range holds it, so the
// output does not depend on the bounds.
#ifndef MSDA_FWD_BALANCE
#define MSDA_FWD_BALANCE 1
#endif
template <typename T> constexpr bool kBalance = MSDA_FWD_BALANCE && sizeof(T) == 2;
constexpr int kBalanceSets = 4;
// Words of a set: bounds [blocks + 1] (in pieces), durations [blocks].
__host__ __device__ constexpr unsigned balance_words(unsigned blocks) { return 2 * blocks + 1; }
__device__ __forceinline__ unsigned equal_bound(unsigned pieces, unsigned k, unsigned blocks) {
  return static_cast<unsigned>(static_cast<unsigned long long>(pieces) * k / blocks);
}

// Bound k (0 < k < blocks; in pieces) of the call two ahead from the bounds and durations of the set
// `old` (the calling warp; warp-uniform): old's bounds, or equal shares where it has none; old's
// bound k where its durations are not all recorded.
__device__ unsigned next_bound(const unsigned* old, unsigned blocks, unsigned pieces, unsigned k) {
  const unsigned lane = threadIdx.x & 31;
  const unsigned* took = old + blocks + 1;
  const bool had = load_relaxed(old + blocks) == pieces;
  const auto bound = [&](unsigned r) { return had ? load_relaxed(old + r) : equal_bound(pieces, r, blocks); };
  unsigned long long total = 0;
  bool full = true;
  for (unsigned r = lane; r < blocks; r += 32) {
    const unsigned d = load_relaxed(took + r);
    total += d;
    full &= d > 0;
  }
  const unsigned was = bound(k);
  if (!__all_sync(0xffffffffu, full)) return was;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  // cumulative cost C at the old bounds: the target total x k / blocks lies in the old range r whose
  // [C_r, C_r+1) holds it
  const unsigned long long target = total * k / blocks;
  unsigned long long carry = 0;
  unsigned est = was;
  for (unsigned base = 0; base < blocks; base += 32) {
    const unsigned r = base + lane;
    const unsigned d = r < blocks ? load_relaxed(took + r) : 0u;
    unsigned long long c = d;  // inclusive scan over the warp
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long u = __shfl_up_sync(0xffffffffu, c, o);
      if (lane >= static_cast<unsigned>(o)) c += u;
    }
    const unsigned long long up = __shfl_up_sync(0xffffffffu, c, 1);
    const unsigned long long before = carry + (lane == 0 ? 0ull : up), after = carry + c;
    const bool here = r < blocks && before <= target && target < after;
    const unsigned who = __ballot_sync(0xffffffffu, here);
    if (who) {
      unsigned mine = 0;
      if (here) {
        const unsigned b0 = bound(r), b1 = bound(r + 1);
        mine = b0 + static_cast<unsigned>((target - before) * (b1 - b0) / d);
      }
      est = __shfl_sync(0xffffffffu, mine, __ffs(who) - 1);
      break;
    }
    carry += __shfl_sync(0xffffffffu, c, 31);
  }
  return static_cast<unsigned>((static_cast<unsigned long long>(was) + est + 1) / 2);
}

// The end of a block's part in balanced ranges (block-wide): sets its first bound for the call two
// ahead (warp `setter`; the previous call is done) and records its duration.
__device__ void record_balance(const Region& region, unsigned pieces, int setter, long long started) {
  const unsigned blocks = gridDim.x, b = blockIdx.x, words = balance_words(blocks);
  if (static_cast<int>(threadIdx.x >> 5) == setter) {
    const unsigned* old = region.balance + (region.set + 3) % kBalanceSets * words;
    unsigned* ahead = region.balance + (region.set + 2) % kBalanceSets * words;
    const unsigned k = b == 0 ? 0u : next_bound(old, blocks, pieces, b);
    if ((threadIdx.x & 31) == 0) {
      ahead[b] = k;
      if (b + 1 == blocks) ahead[blocks] = pieces;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    region.balance[region.set * words + blocks + 1 + b] =
        static_cast<unsigned>(max(1ll, min(clock64() - started, 0xffffffffll)));
  }
}

// The range [first, end) of groups (in chunk order) of block `block` of `blocks`: equal shares of
// whole warp-sized pieces.
__device__ __forceinline__ void region_range(int64_t groups, unsigned per_warp, unsigned block, unsigned blocks,
                                             unsigned* first, unsigned* end) {
  const int64_t pieces = (groups + per_warp - 1) / per_warp;
  *first = static_cast<unsigned>(pieces * block / blocks) * per_warp;
  *end = static_cast<unsigned>(min(groups, pieces * (block + 1) / blocks * per_warp));
}

// The forward kernels that loop over tiles: those of fp32 values and several levels (the injector's:
// -6 % on its forward, 40a). With 16-bit values or one level the loop was 1-7 % slower (its next
// tile's loads are scheduled late, past most of the gathers). MSDA_FWD_TILE_LOOP: 0 none, 1 these,
// 2 every compile-time kernel.
template <typename T>
__host__ __device__ constexpr bool fwd_tile_loop(int levels) {
  return levels > 0 && (MSDA_FWD_TILE_LOOP == 2 || (MSDA_FWD_TILE_LOOP == 1 && std::is_same_v<T, float> && levels > 1));
}

// LEVELS, POINTS, LOG2G: compile-time levels, points and log2 of the group size for the model's
// shapes (all loops over samples unroll), or 0, 0, -1: taken from dims at run time. OFF32: value
// takes fewer than 2^31 bytes and the locations and the output have fewer than 2^31 elements: the
// work coordinates are 32-bit, and the slot table holds each corner's byte offset (row x M x D x
// sizeof(T), computed once per sample by the lane that fills the slot) instead of its row, so that a
// gather's address is one 32 + 64-bit add. The locations are aligned to (x, y) pairs
// (launch_forward).
//
// HEADS > 0: region order (above; a warp's piece is its tile; STREAM: streaming, above). Otherwise
// a block takes the tile (kThreads >> log2g groups; tiles: their count) blockIdx.x, or where
// fwd_tile_loop holds, the tiles blockIdx.x, blockIdx.x + gridDim.x, ... of a grid of one resident
// wave (launch_forward). In both loops a lane issues the next tile's location and weight loads as
// soon as it has filled the current tile's slots, so that they are in flight during the current
// tile's gathers, and the block's set-up is paid once for several tiles.
template <typename T, bool ALIGNED, int LEVELS, int POINTS, int LOG2G, bool OFF32, int HEADS, bool STREAM>
__global__ void __launch_bounds__(HEADS > 0 ? kRegionThreads : kThreads, HEADS > 0 ? 1 : forward_min_blocks(LEVELS))
    forward_kernel(const T* __restrict__ value, const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                   const acc_t<T>* __restrict__ loc, const acc_t<T>* __restrict__ attn, T* __restrict__ out,
                   Dims dims, int64_t tiles, Region region) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  constexpr int kBlock = HEADS > 0 ? kRegionThreads : kThreads;
  __shared__ LevelTable lv;
  __shared__ SlotTable<A, fwd_slots(LEVELS, POINTS, LOG2G, kBlock)> table;
  const int log2g = LOG2G >= 0 ? LOG2G : dims.log2g;
  const int points = POINTS > 0 ? POINTS : dims.points;
  const int G = 1 << log2g;
  const int per_tile = kBlock >> log2g;
  const int lane = static_cast<int>(threadIdx.x & (G - 1));
  const int c0 = lane * V;
  const int valid = max(0, min(V, dims.d - c0));
  const int samples = LEVELS > 0 ? LEVELS * POINTS : dims.levels * dims.points;
  // Work order: the one-level kernels (the extractor's map, 21 samples per value row and head) take
  // the groups in memory order, a warp the heads of adjacent queries, whose locations, weights and
  // output rows are contiguous (fewer L1 wavefronts than the gathers lose in locality); the others
  // that of memory_group (a warp adjacent queries of one head).
  constexpr bool kMemoryOrder = MSDA_FWD_MEMORY_ORDER && LEVELS == 1;
  // The table fill: lane k x W + g of a warp (W = 32 / G groups per warp) computes the slots k, k + G,
  // ... of the warp's group g, so that the 8 lanes of a store phase write 8 consecutive entries (no
  // bank conflicts; with each lane filling its own group's slots, a phase wrote one column of slots).
#if MSDA_FWD_FILL_BY_ENTRY
  const int owner = static_cast<int>(threadIdx.x & ((32 >> log2g) - 1));
  const int kl = static_cast<int>((threadIdx.x & 31) >> (5 - log2g));
#else
  const int owner = group_in_warp(log2g), kl = lane;
#endif
  const int chunk = LEVELS > 0 && LOG2G >= 0 ? fwd_chunk(LOG2G, LEVELS * POINTS) : max(G, kBatch);

  // The calling lane's work in a tile: its group's value rows (vbase) and output row (out_group);
  // and the locations and weights of the group whose slots it fills (its owner's: lg, ag). Lanes
  // past the end stay to the end (warp-synchronous shared-memory tables): they read the last
  // group's inputs and write nothing (has_ch false).
  struct Work {
    const T* vbase;
    int64_t out_group;
    bool has_ch;
  };
  const A* lg;
  const A* ag;
  // region order: the block's groups [first, end) in chunk order; warp w takes the pieces w, w +
  // warps, ... (a piece: the 32 / G groups of one warp) starting at first + k x groups per warp
  static_assert(HEADS == 0 || HEADS == 1 || HEADS == 2 || HEADS == 4, "heads per chunk: 1, 2 or 4");
  constexpr int kLog2Heads = HEADS == 4 ? 2 : HEADS == 2 ? 1 : 0;
  const unsigned per_warp = 32u >> log2g;
  unsigned first = 0, end = 0;
  const unsigned pieces = static_cast<unsigned>((dims.groups + per_warp - 1) / per_warp);
  // balanced ranges for 16-bit values (fp32: no gain, 4 bytes of spills at 64 registers)
  const bool balanced = kBalance<T> && region.balance != nullptr;
  if constexpr (HEADS > 0) {
    if (balanced) {  // this call's bounds (in pieces), or equal shares
      const unsigned* set = region.balance + region.set * balance_words(gridDim.x);
      const bool had = load_relaxed(set + gridDim.x) == pieces;
      first = (had ? load_relaxed(set + blockIdx.x) : equal_bound(pieces, blockIdx.x, gridDim.x)) * per_warp;
      end = static_cast<unsigned>(min(dims.groups, static_cast<int64_t>(had ? load_relaxed(set + blockIdx.x + 1)
                                                                           : equal_bound(pieces, blockIdx.x + 1, gridDim.x)) * per_warp));
    } else {
      region_range(dims.groups, per_warp, blockIdx.x, gridDim.x, &first, &end);
    }
    if (first >= end) {  // (uniform in the block)
      if (balanced) {  // an empty range still sets its bound and records
        wait_for_previous_kernel();
        record_balance(region, pieces, 0, clock64());
      }
      return;
    }
  }
  const auto piece = [&](int64_t k) { return first + static_cast<unsigned>(k) * per_warp; };
  const auto locate = [&](int64_t tile) {
    using I = std::conditional_t<OFF32, unsigned, int64_t>;  // OFF32: 32-bit work coordinates
    const I group = HEADS > 0 ? static_cast<I>(piece(tile) + ((threadIdx.x & 31) >> log2g))
                              : static_cast<I>(tile) * per_tile + (threadIdx.x >> log2g);
    const I groups = HEADS > 0 ? static_cast<I>(end) : static_cast<I>(dims.groups);
    const bool active = group < groups;
    const I work = active ? group : groups - 1;
    int64_t n;
    int m;
    I mem_group = work;
    if constexpr (HEADS > 0) {
      const unsigned v = static_cast<unsigned>(work) >> kLog2Heads;
      const unsigned t = dims.by_lq(static_cast<int>(v)), q = v - t * static_cast<unsigned>(dims.lq);
      const unsigned nn = region.by_chunks(static_cast<int>(t)), hc = t - nn * static_cast<unsigned>(region.chunks);
      n = nn;
      m = static_cast<int>(hc * HEADS + (static_cast<unsigned>(work) & (HEADS - 1)));
      mem_group = static_cast<I>((nn * static_cast<unsigned>(dims.lq) + q) * static_cast<unsigned>(dims.m) + m);
    } else if constexpr (kMemoryOrder) {
      batch_and_head<OFF32>(work, dims, &n, &m);
    } else {
      mem_group = static_cast<I>(memory_group<OFF32>(work, dims, &n, &m));
    }
    Work w;
    w.has_ch = active && c0 < dims.d;
    const I head_start = (static_cast<I>(n) * dims.s * dims.m + m) * dims.d;  // (n, row 0, m, channel 0)
    const int ch = w.has_ch ? c0 : 0;
    w.vbase = OFF32 ? value + (head_start + ch) : value + head_start + ch;  // (one 32-bit sum, or two adds)
    w.out_group = mem_group;
    const I owner_group = __shfl_sync(0xffffffffu, mem_group, owner << log2g);
    lg = loc + owner_group * static_cast<I>(samples) * 2;
    ag = attn + owner_group * static_cast<I>(samples);
    return w;
  };
  int64_t tile = HEADS > 0 ? threadIdx.x >> 5 : blockIdx.x;
  Work cur = locate(tile);

  // Launched as a dependent (sm_90): the blocks are resident while the kernel before drains and wait
  // for it before their first load. Then they let the next kernel start: where that is the backward's
  // zeroing, it waits for this kernel before writing, and lets the binning set up early only for
  // autograd's saved inputs (written before this kernel started; `saved_inputs`).
#if MSDA_FWD_PDL >= 1
  wait_for_previous_kernel();
#endif
#if MSDA_FWD_PDL == 2
  start_next_kernel();
#endif
  const long long started = HEADS > 0 && balanced ? clock64() : 0;
  // the owner's samples j0 + kl, j0 + kl + G, ... of a chunk: locations and attention weights
  constexpr int kPerLane = LEVELS > 0 && LOG2G >= 0 ? fwd_per_lane(LOG2G, LEVELS * POINTS) : kBatch;
  Pair<A> xy[kPerLane];
  A aw[kPerLane];
  const auto load_chunk = [&](int j0) {
#pragma unroll
    for (int u = 0; u < kPerLane; ++u) {
      const int i = kl + u * G;
      if (i < chunk) {
        const int j = min(j0 + i, samples - 1);
        xy[u] = load_location<STREAM>(lg, j);
        aw[u] = j0 + i < samples ? load_weight<STREAM>(ag + j) : A(0);
      }
    }
  };
  // compile-time shapes: one chunk per tile, its inputs in flight with the level sizes (the one-level
  // kernels spilled with it at 32 registers, version 36; at 40 they do not, version 39), and in the
  // kernels that loop, the next tile's in flight with the current tile's gathers. The one-level
  // kernels read the level's sizes directly (three cached loads per lane) instead of a shared level
  // table behind a block barrier (with both: -1 % on the extractor's forward, 39f).
  constexpr bool kEarly = LEVELS > 0;
  constexpr bool kLoop = HEADS > 0 || fwd_tile_loop<T>(LEVELS);
  if constexpr (kEarly) load_chunk(0);
  constexpr bool kDirect = LEVELS == 1;
  int height0 = 0, width0 = 0, start0 = 0;
  if constexpr (kDirect) {
    height0 = static_cast<int>(__ldg(shapes));
    width0 = static_cast<int>(__ldg(shapes + 1));
    start0 = static_cast<int>(__ldg(starts));
  } else {
    load_level_sizes(lv, shapes, starts, dims.levels);
    __syncthreads();
  }
  const int64_t row_stride = static_cast<int64_t>(dims.m) * dims.d;

  for (;;) {
    const int64_t next = tile + (HEADS > 0 ? kBlock >> 5 : gridDim.x);  // uniform in the block (region: the warp)
    Work following = cur;
    A acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = A(0);
#pragma unroll
    for (int j0 = 0; j0 < samples; j0 += chunk) {
      if (!kEarly || j0 > 0) load_chunk(j0);
#pragma unroll
      for (int u = 0; u < kPerLane; ++u) {
        const int i = kl + u * G;
        if (i >= chunk) break;
        const int j = min(j0 + i, samples - 1);
        const int l = j / points;
        const Corners<A> c = bilinear_corners<A>(xy[u].x, xy[u].y, kDirect ? height0 : lv.height[l],
                                                 kDirect ? width0 : lv.width[l], kDirect ? start0 : lv.start[l]);
        const A a = aw[u];
        CornerWeights<A> cw;
#pragma unroll
        for (int k = 0; k < 4; ++k) cw.w[k] = a * c.w[k];
        const int at = slot_index(log2g, chunk, i, owner);
        if constexpr (OFF32) {  // byte offsets; a corner outside (row -1) stays negative
          const int rs = static_cast<int>(row_stride * sizeof(T));
          table.rows[at] = make_int4(c.s[0] * rs, c.s[1] * rs, c.s[2] * rs, c.s[3] * rs);
        } else {
          table.rows[at] = make_int4(c.s[0], c.s[1], c.s[2], c.s[3]);
        }
        table.weights[at] = cw;
      }
      __syncwarp();
      if constexpr (kLoop) {  // the tile's only chunk is in the table: the next tile's inputs (the
        // last tile's again after the last: unconditional, or the compiler sinks them past the gathers)
        following = locate(HEADS > 0 || next < tiles ? next : tile);
        load_chunk(0);
      }
      const int count = min(chunk, samples - j0);
#pragma unroll
      for (int i0 = 0; i0 < count; i0 += kBatch) {
        int idx[kBatch][4];
        A wgt[kBatch][4];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int at = slot_index(log2g, chunk, min(i0 + b, count - 1), group_in_warp(log2g));
          const int4 row = table.rows[at];
          const CornerWeights<A> cw = table.weights[at];
          // the model's shapes: every lane has channels (lanes past the end read the last group's
          // valid rows and store nothing); i0 + b < count is known at compile time there
          const bool real = (LEVELS > 0 || cur.has_ch) && i0 + b < count;
          idx[b][0] = real ? row.x : -1;
          idx[b][1] = real ? row.y : -1;
          idx[b][2] = real ? row.z : -1;
          idx[b][3] = real ? row.w : -1;
#pragma unroll
          for (int k = 0; k < 4; ++k) wgt[b][k] = real ? cw.w[k] : A(0);
        }
        LaneData<T, ALIGNED> data[kBatch][4];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if constexpr (OFF32) gather_row(data[b][k], cur.vbase, idx[b][k], ByteOffset{}, valid);
            else gather_row(data[b][k], cur.vbase, idx[b][k], row_stride, valid);
          }
        }
        // all gathers of the batch are in flight; one fused multiply-add per corner and channel
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            A x[V];
            data[b][k].get(x);
#pragma unroll
            for (int v = 0; v < V; ++v) acc[v] = fma_acc(wgt[b][k], x[v], acc[v]);
          }
        }
      }
      __syncwarp();
    }
    if (cur.has_ch) store_lane<T, ALIGNED>(out + cur.out_group * dims.d + c0, acc, valid);
    if (!kLoop || (HEADS > 0 ? piece(next) >= end : next >= tiles)) break;
    tile = next;
    cur = following;
  }
  if (HEADS > 0 && balanced) {  // the setter: the last warp with pieces (the fewest)
    const unsigned own = (end - first + per_warp - 1) / per_warp;
    record_balance(region, pieces, static_cast<int>(min(own, static_cast<unsigned>(kBlock >> 5)) - 1), started);
  }
}

// Balanced ranges' words for the tensor's device, this stream and the call's shape, and the set this
// call writes; null while the stream is captured into a graph (whose replays may run on other streams
// too): equal shares there.
struct Balance {
  unsigned* words;
  int set;
};
Balance balance_words_for(const at::Tensor& value, cudaStream_t stream, int64_t groups, int64_t lq, int per_warp,
                          int blocks) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (!MSDA_FWD_BALANCE || capture != cudaStreamCaptureStatusNone) return {nullptr, 0};
  struct Words {
    at::Tensor words;
    unsigned calls = 0;
  };
  using Key = std::tuple<int, cudaStream_t, int64_t, int64_t, int, int>;
  static std::mutex mutex;
  static auto* all = new std::map<Key, Words>();  // kept to the process's end (no CUDA frees at exit)
  const std::lock_guard<std::mutex> lock(mutex);
  Words& w = (*all)[Key{value.get_device(), stream, groups, lq, per_warp, blocks}];
  if (!w.words.defined()) {
    w.words = at::zeros({kBalanceSets * static_cast<int64_t>(balance_words(blocks))}, value.options().dtype(at::kInt));
  }
  const int set = static_cast<int>(w.calls++ % kBalanceSets);
  return {reinterpret_cast<unsigned*>(w.words.data_ptr<int>()), set};
}

}  // namespace

void launch_forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                    const at::Tensor& loc, const at::Tensor& attn, const at::Tensor& out, const Geometry& geo,
                    bool streaming) {
  dispatch_value_type(value.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = typename CudaType<S>::type;
    using A = acc_t<T>;
    const int log2g = log2_group(geo.d, kVec<T>);
    const Dims dims = make_dims(geo, log2g);
    const bool aligned = geo.d % kVec<T> == 0 && aligned16(value);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t tiles = blocks_for(dims.groups << log2g);
    const T* val = reinterpret_cast<const T*>(value.data_ptr<S>());
    T* o = reinterpret_cast<T*>(out.data_ptr<S>());
    const int64_t* shp = spatial_shapes.data_ptr<int64_t>();
    const int64_t* st = level_start_index.data_ptr<int64_t>();
    // 32-bit indices: value's bytes, the locations' and the output's elements below 2^31
    const bool off32 = value.numel() * static_cast<int64_t>(sizeof(T)) < INT_MAX && loc.numel() < INT_MAX &&
                       out.numel() < INT_MAX;
    const bool dependent = capability_major(value) >= 9;
    // (x, y) pairs are read with one load: a location tensor that starts between two (a view at an odd
    // offset) is copied first
    const bool pairs = reinterpret_cast<uintptr_t>(loc.data_ptr()) % (2 * sizeof(A)) == 0;
    const at::Tensor loc_pairs = pairs ? loc : loc.clone();
    dispatch_shape<T>(aligned, dims, [&](auto al, auto lv, auto pt, auto lg) {
      // one resident wave of blocks looping over the tiles, or a block per tile
      constexpr int levels = decltype(lv)::value;
      const int64_t grid = fwd_tile_loop<T>(levels)
          ? std::min<int64_t>(tiles, static_cast<int64_t>(sm_count(value)) * forward_min_blocks(levels))
          : tiles;
      constexpr int heads = levels == 1 && decltype(lg)::value >= 0
          ? (std::is_same_v<T, float> ? MSDA_FWD_REGION_HEADS_FP32 : MSDA_FWD_REGION_HEADS) : 0;
      constexpr int per_chunk = heads > 0 ? heads : 1;
      const int chunks = static_cast<int>(geo.m) / per_chunk;
      const auto run = [&](auto o32, auto hd, auto sm) {
        constexpr int h = decltype(hd)::value;
        // region order: a block per SM, or per warp-sized piece where there are fewer
        const int64_t blocks = h > 0 ? std::min<int64_t>(sm_count(value), ((dims.groups << log2g) + 31) / 32) : grid;
        const Balance balance = h > 0 && kBalance<T> ? balance_words_for(value, stream, dims.groups, geo.lq, 32 >> log2g, static_cast<int>(blocks))
                                      : Balance{nullptr, 0};
        launch_after(forward_kernel<T, decltype(al)::value, decltype(lv)::value, decltype(pt)::value,
                                    decltype(lg)::value, decltype(o32)::value, h, decltype(sm)::value>,
                     blocks, h > 0 ? kRegionThreads : kThreads, 0, stream, MSDA_FWD_PDL >= 1 && dependent, val, shp,
                     st, loc_pairs.data_ptr<A>(), attn.data_ptr<A>(), o, dims, tiles, Region{FastDiv::of(chunks), chunks, balance.words, balance.set});
      };
      if constexpr (heads > 0) {
        if (off32 && geo.m % per_chunk == 0) {
          if (streaming && MSDA_FWD_STREAMING) run(std::true_type{}, Int<heads>{}, std::true_type{});
          else run(std::true_type{}, Int<heads>{}, std::false_type{});
          return;
        }
      }
      if (off32) {
        run(std::true_type{}, Int<0>{}, std::false_type{});
      } else {
        run(std::false_type{}, Int<0>{}, std::false_type{});
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace msda
