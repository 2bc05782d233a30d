// lqer — quantized_matrix<Format>: a logical rows × cols matrix stored as
// packed integer codes plus one scale record per block, blocks running along
// the reduction axis.
//
// Layout. The matrix is a set of `lanes`, each a run of `depth` elements along
// the reduction axis, cut into blocks of `block_len` (the format's block, or
// the whole depth for kPerRow formats):
//   block_axis::cols — blocks run along each row (lanes = rows, depth = cols);
//                      an nn.Linear weight [out, in] reduces over `in` this way.
//   block_axis::rows — blocks run down each column (lanes = cols, depth = rows);
//                      LQER's A [in, k] reduces over `in`, its rows.
// Each lane owns blocks_per_lane · block_len code slots: a depth that is not a
// multiple of the block is padded with zero codes inside the last block only,
// and those padding codes are never decoded back into the logical shape.
// Codes of ≤ 4-bit formats are packed two per byte (element 2j of a lane in the
// low nibble, 2j+1 in the high nibble, two's complement); wider codes take a
// byte each. 2- and 3-bit codes also take a nibble: simpler kernels, and a
// 3-bit format is a research format here, not a storage one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/exec/executor.hpp"
#include "lqer/format/format.hpp"
#include "lqer/tensor/check.hpp"
#include "lqer/tensor/view.hpp"

namespace lqer {

/// Which axis the blocks run along (see quantized_matrix).
enum class block_axis {
  cols,  ///< blocks along each row: reduction over columns (weights [out, in])
  rows,  ///< blocks down each column: reduction over rows (LQER's A [in, k])
};

template <quantization_format Format>
class quantized_matrix {
 public:
  using format = Format;
  using block_scale = typename Format::block_scale;
  static constexpr bool kNibblePacked = Format::kBits <= 4;

  quantized_matrix() = default;

  /// How a rows × cols matrix blocked along `axis` is stored (see the file
  /// comment): what lanes(), depth(), block_len(), blocks_per_lane() and
  /// lane_code_bytes() of such a matrix return. Readers of stored matrices
  /// (io/checkpoint.hpp) check a file's tensor shapes against it.
  struct geometry {
    index_t lanes = 0, depth = 0, block_len = 0, blocks_per_lane = 0, lane_code_bytes = 0;
  };
  static constexpr geometry geometry_of(index_t rows, index_t cols, block_axis axis) noexcept {
    geometry g;
    g.lanes = axis == block_axis::cols ? rows : cols;
    g.depth = axis == block_axis::cols ? cols : rows;
    g.block_len = Format::kBlock == kPerRow ? g.depth + (g.depth & 1) : Format::kBlock;  // even, for nibble pairs
    g.blocks_per_lane = g.block_len > 0 ? (g.depth + g.block_len - 1) / g.block_len : 0;
    const index_t slots = g.blocks_per_lane * g.block_len;
    g.lane_code_bytes = kNibblePacked ? slots / 2 : slots;
    return g;
  }

  /// Quantizes `src` (validated: non-empty, stride ≥ cols, every element finite;
  /// value_error names the first NaN/Inf by row and column).
  static quantized_matrix quantize(matrix_view<const float> src, block_axis axis = block_axis::cols) {
    src.validate("quantize");
    require_finite(src, "quantize");
    quantized_matrix m(src.rows, src.cols, axis);
    for (index_t lane = 0; lane < m.lanes_; ++lane) m.quantize_lane(src, lane);
    return m;
  }

  /// The same, with the lanes split over `exec` (any lqer::executor, e.g. a
  /// thread_pool_executor). Each lane is encoded by one task and owns its codes
  /// and scales, so the result is bit-identical to the serial overload for any
  /// executor. Validation runs first, on the calling thread: on bad input
  /// nothing is encoded.
  template <executor Executor>
  static quantized_matrix quantize(matrix_view<const float> src, block_axis axis, Executor&& exec) {
    src.validate("quantize");
    require_finite(src, "quantize");
    quantized_matrix m(src.rows, src.cols, axis);
    exec.parallel_for(m.lanes_, [&](index_t begin, index_t end) {
      for (index_t lane = begin; lane < end; ++lane) m.quantize_lane(src, lane);
    });
    return m;
  }

  /// A matrix from codes and scales that are already encoded — read from a
  /// file in this format (a GGUF Q4_0 / Q8_0 tensor), never re-quantized.
  /// `codes` and `scales` are in this class's layout: lanes() · lane_code_bytes()
  /// packed code bytes and lanes() · blocks_per_lane() records, lane after lane.
  /// Throws shape_error for a non-positive shape or wrong sizes, value_error for
  /// a code outside [Format::kQmin, Format::kQmax], a non-zero padding code, a
  /// non-finite scale, or a zero point outside [kQmin, kQmax] (non-zero for a
  /// format without one): what quantize() could never have produced, which the
  /// kernels are entitled to assume away.
  // `codes` is a sink, moved into codes_ below: clang-tidy's unnecessary-value-param
  // does not see a move into a member of the (dependent) class template.
  // NOLINTNEXTLINE(performance-unnecessary-value-param)
  static quantized_matrix from_codes(index_t rows, index_t cols, block_axis axis, std::vector<std::uint8_t> codes,
                                     std::vector<block_scale> scales) {
    if (rows <= 0 || cols <= 0)
      throw shape_error("quantized_matrix::from_codes: shape " + std::to_string(rows) + "x" + std::to_string(cols) +
                        " is empty or negative");
    quantized_matrix m(rows, cols, axis, geometry_only{});
    const auto want_codes = static_cast<std::size_t>(m.lanes_ * m.lane_code_bytes_);
    const auto want_scales = static_cast<std::size_t>(m.lanes_ * m.blocks_per_lane_);
    if (codes.size() != want_codes || scales.size() != want_scales)
      throw shape_error("quantized_matrix::from_codes: a " + std::to_string(rows) + "x" + std::to_string(cols) + " " +
                        Format::name() + " matrix holds " + std::to_string(want_codes) + " code bytes and " +
                        std::to_string(want_scales) + " scales; got " + std::to_string(codes.size()) + " and " +
                        std::to_string(scales.size()));
    m.codes_ = std::move(codes);
    m.scales_ = std::move(scales);
    // Every code in range: one branch-free pass over the bytes (a model's
    // worth of layers is tens of MB, read at load time), then — only when it
    // found something — the element-by-element pass that names it. The ranges
    // are tested on the integers themselves, so no compiler flag can drop
    // the test.
    bool codes_ok = true;
    {
      const std::uint8_t* c = m.codes_.data();
      const std::size_t n = m.codes_.size();
      unsigned bad = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if constexpr (kNibblePacked) {
          const int lo = static_cast<std::int8_t>(static_cast<std::uint8_t>(c[i] << 4)) >> 4;
          const int hi = static_cast<std::int8_t>(c[i]) >> 4;
          bad |= static_cast<unsigned>(lo < Format::kQmin) | static_cast<unsigned>(lo > Format::kQmax) |
                 static_cast<unsigned>(hi < Format::kQmin) | static_cast<unsigned>(hi > Format::kQmax);
        } else {
          const int q = int{c[i]} - ((int{c[i]} >> 7) << 8);  // the byte as two's complement
          bad |= static_cast<unsigned>(q < Format::kQmin) | static_cast<unsigned>(q > Format::kQmax);
        }
      }
      codes_ok = bad == 0;
    }
    const index_t slots = m.blocks_per_lane_ * m.block_len_;
    for (index_t lane = 0; lane < m.lanes_; ++lane) {
      for (index_t b = 0; b < m.blocks_per_lane_; ++b) {
        const block_scale& s = m.scales_[lane * m.blocks_per_lane_ + b];
        if (!std::isfinite(Format::scale_value(s)) || !std::isfinite(Format::min_value(s)))
          throw value_error("quantized_matrix::from_codes: block " + std::to_string(b) + " of lane " +
                            std::to_string(lane) + " has a non-finite " +
                            (std::isfinite(Format::scale_value(s)) ? "minimum" : "scale"));
        const int z = Format::zero_point(s);
        if (Format::kHasZeroPoint ? (z < Format::kQmin || z > Format::kQmax) : z != 0)
          throw value_error("quantized_matrix::from_codes: block " + std::to_string(b) + " of lane " +
                            std::to_string(lane) + " has zero point " + std::to_string(z) + ", not a valid " +
                            Format::name() + " zero point");
      }
      // In range everywhere: only the padding (a depth that is no whole
      // number of blocks) is left to check element by element.
      for (index_t i = codes_ok ? m.depth_ : 0; i < slots; ++i) {
        const std::int8_t q = m.lane_code(lane, i);
        if (q < Format::kQmin || q > Format::kQmax || (i >= m.depth_ && q != 0))
          throw value_error("quantized_matrix::from_codes: code " + std::to_string(q) + " at element " +
                            std::to_string(i) + " of lane " + std::to_string(lane) + " is not a valid " +
                            Format::name() + (i >= m.depth_ ? " padding code (must be 0)" : " code"));
      }
    }
    return m;
  }

  index_t rows() const noexcept { return rows_; }
  index_t cols() const noexcept { return cols_; }
  block_axis axis() const noexcept { return axis_; }
  /// Number of independent runs along the reduction axis (rows for block_axis::cols).
  index_t lanes() const noexcept { return lanes_; }
  /// Logical length of each lane (cols for block_axis::cols).
  index_t depth() const noexcept { return depth_; }
  index_t block_len() const noexcept { return block_len_; }
  index_t blocks_per_lane() const noexcept { return blocks_per_lane_; }
  /// Bytes of packed codes per lane (padding included).
  index_t lane_code_bytes() const noexcept { return lane_code_bytes_; }
  bool empty() const noexcept { return lanes_ == 0; }

  /// Every packed code byte, lane after lane (lanes() · lane_code_bytes()).
  std::span<const std::uint8_t> codes() const noexcept { return codes_; }
  /// Every scale record, lane after lane (lanes() · blocks_per_lane()).
  std::span<const block_scale> scales() const noexcept { return scales_; }

  /// Packed code bytes of one lane.
  std::span<const std::uint8_t> lane_codes(index_t lane) const noexcept {
    return {codes_.data() + lane * lane_code_bytes_, static_cast<std::size_t>(lane_code_bytes_)};
  }
  /// Scale records of one lane's blocks.
  std::span<const block_scale> lane_scales(index_t lane) const noexcept {
    return {scales_.data() + lane * blocks_per_lane_, static_cast<std::size_t>(blocks_per_lane_)};
  }

  /// Code of element `i` (0 ≤ i < blocks_per_lane·block_len, padding included) of a lane.
  std::int8_t lane_code(index_t lane, index_t i) const noexcept {
    const std::uint8_t* p = codes_.data() + lane * lane_code_bytes_;
    if constexpr (kNibblePacked) {
      const std::uint8_t byte = p[i >> 1];
      const std::uint8_t nib = (i & 1) ? (byte >> 4) : (byte & 0x0f);
      return static_cast<std::int8_t>(static_cast<std::int8_t>(nib << 4) >> 4);  // sign-extend 4 bits
    } else {
      return static_cast<std::int8_t>(p[i]);
    }
  }

  /// Code and scale of logical element (r, c).
  std::int8_t code(index_t r, index_t c) const noexcept {
    return axis_ == block_axis::cols ? lane_code(r, c) : lane_code(c, r);
  }
  const block_scale& scale(index_t r, index_t c) const noexcept {
    return axis_ == block_axis::cols ? scales_[r * blocks_per_lane_ + c / block_len_]
                                     : scales_[c * blocks_per_lane_ + r / block_len_];
  }
  /// Dequantized value of logical element (r, c), as Format::decode gives it.
  float value(index_t r, index_t c) const noexcept { return Format::decode(code(r, c), scale(r, c)); }

  /// Writes the dequantized rows × cols matrix into `dst` (same shape required;
  /// nothing outside dst's logical shape is touched).
  void dequantize(matrix_view<float> dst) const {
    dst.validate("dequantize");
    if (dst.rows != rows_ || dst.cols != cols_)
      throw shape_error("dequantize: destination is " + std::to_string(dst.rows) + "x" + std::to_string(dst.cols) +
                        " but the quantized matrix is " + std::to_string(rows_) + "x" + std::to_string(cols_));
    for (index_t r = 0; r < rows_; ++r)
      for (index_t c = 0; c < cols_; ++c) dst(r, c) = value(r, c);
  }
  std::vector<float> dequantize() const {
    std::vector<float> out(static_cast<std::size_t>(rows_ * cols_));
    dequantize(matrix_view<float>(out.data(), rows_, cols_));
    return out;
  }

  /// Storage in bytes: packed codes (padding included) plus scale records at their
  /// format's size (kScaleBits), as a file or a packed kernel stream would hold them.
  std::size_t storage_bytes() const noexcept {
    return codes_.size() + static_cast<std::size_t>(lanes_ * blocks_per_lane_ * Format::kScaleBits / 8);
  }
  /// Average storage bits per logical element.
  double bits_per_element() const noexcept { return 8.0 * double(storage_bytes()) / double(rows_ * cols_); }

 private:
  quantized_matrix(index_t rows, index_t cols, block_axis axis) : quantized_matrix(rows, cols, axis, geometry_only{}) {
    codes_.assign(static_cast<std::size_t>(lanes_ * lane_code_bytes_), 0);
    scales_.resize(static_cast<std::size_t>(lanes_ * blocks_per_lane_));
  }
  /// The shape without storage (from_codes moves its storage in).
  struct geometry_only {};
  quantized_matrix(index_t rows, index_t cols, block_axis axis, geometry_only) : rows_(rows), cols_(cols), axis_(axis) {
    const geometry g = geometry_of(rows, cols, axis);
    lanes_ = g.lanes;
    depth_ = g.depth;
    block_len_ = g.block_len;
    blocks_per_lane_ = g.blocks_per_lane;
    lane_code_bytes_ = g.lane_code_bytes;
  }

  void quantize_lane(matrix_view<const float> src, index_t lane) {
    // Element i of this lane sits at base[i * step] in the source.
    const float* base = axis_ == block_axis::cols ? src.row(lane) : src.data + lane;
    const index_t step = axis_ == block_axis::cols ? 1 : src.row_stride;
    std::int8_t q[Format::kBlock == kPerRow ? 1 : Format::kBlock];
    std::vector<std::int8_t> row_codes;  // kPerRow formats: one block of `depth` codes
    std::int8_t* qbuf = q;
    if constexpr (Format::kBlock == kPerRow) {
      row_codes.resize(static_cast<std::size_t>(block_len_));
      qbuf = row_codes.data();
    }
    std::uint8_t* out = codes_.data() + lane * lane_code_bytes_;
    for (index_t b = 0; b < blocks_per_lane_; ++b) {
      const index_t start = b * block_len_;
      const index_t n = std::min(block_len_, depth_ - start);
      block_scale& s = scales_[lane * blocks_per_lane_ + b];
      // A whole contiguous block (the weight's case: blocks along a row) takes
      // the format's SIMD encoder where it has one, bit-identical to quantize_block.
      if constexpr (requires(const float* x, std::int8_t* c) { Format::quantize_whole_block(x, c); })
        s = step == 1 && n == block_len_ ? Format::quantize_whole_block(base + start, qbuf)
                                         : Format::quantize_block(base + start * step, n, step, qbuf);
      else
        s = Format::quantize_block(base + start * step, n, step, qbuf);
      check_scale(s, lane, b);
      put_codes(out, start, qbuf, n);  // padding stays 0
    }
  }

  void check_scale(const block_scale& s, index_t lane, index_t b) const {
    // An fp16 scale can overflow to Inf for data beyond ~65504·qmax; refuse to store it.
    // Likewise a block minimum (fp16: a block whose smallest value is below −65504).
    if (!std::isfinite(Format::scale_value(s)) || !std::isfinite(Format::min_value(s)))
      throw value_error("quantize: block " + std::to_string(b) + " of " +
                        (axis_ == block_axis::cols ? "row " : "column ") + std::to_string(lane) + " needs a " +
                        (std::isfinite(Format::scale_value(s)) ? "minimum" : "scale") + " beyond the range of " +
                        Format::name() + "'s scale type");
  }

  static void put_code(std::uint8_t* lane_bytes, index_t i, std::int8_t q) noexcept {
    if constexpr (kNibblePacked) {
      std::uint8_t& byte = lane_bytes[i >> 1];
      const std::uint8_t nib = static_cast<std::uint8_t>(q) & 0x0f;
      byte = (i & 1) ? static_cast<std::uint8_t>((byte & 0x0f) | (nib << 4))
                     : static_cast<std::uint8_t>((byte & 0xf0) | nib);
    } else {
      lane_bytes[i] = static_cast<std::uint8_t>(q);
    }
  }
  /// Codes q[0, n) as elements start … start + n − 1 of a lane: nibble pairs a
  /// byte at a time (blocks start on a byte: block_len_ is even), an odd last one alone.
  static void put_codes(std::uint8_t* lane_bytes, index_t start, const std::int8_t* q, index_t n) noexcept {
    if constexpr (kNibblePacked) {
      index_t i = 0;
      if (start % 2 == 0)
        for (; i + 1 < n; i += 2)
          lane_bytes[(start + i) >> 1] = static_cast<std::uint8_t>((static_cast<std::uint8_t>(q[i]) & 0x0f) |
                                                                   (static_cast<std::uint8_t>(q[i + 1]) << 4));
      for (; i < n; ++i) put_code(lane_bytes, start + i, q[i]);
    } else {
      std::memcpy(lane_bytes + start, q, static_cast<std::size_t>(n));
    }
  }

  index_t rows_ = 0, cols_ = 0;
  block_axis axis_ = block_axis::cols;
  index_t lanes_ = 0, depth_ = 0, block_len_ = 0, blocks_per_lane_ = 0, lane_code_bytes_ = 0;
  std::vector<std::uint8_t> codes_;
  std::vector<block_scale> scales_;
};

/// Quantize-then-dequantize `src` into `dst` (same shape; may alias `src`
/// exactly). On any error nothing is written.
template <quantization_format Format>
void fake_quantize(matrix_view<const float> src, matrix_view<float> dst, block_axis axis = block_axis::cols) {
  dst.validate("fake_quantize");
  if (dst.rows != src.rows || dst.cols != src.cols)
    throw shape_error("fake_quantize: destination is " + std::to_string(dst.rows) + "x" + std::to_string(dst.cols) +
                      " but the source is " + std::to_string(src.rows) + "x" + std::to_string(src.cols));
  quantized_matrix<Format>::quantize(src, axis).dequantize(dst);
}

}  // namespace lqer
