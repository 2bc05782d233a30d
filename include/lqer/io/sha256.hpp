// lqer — SHA-256 (FIPS 180-4), for the checksums stored beside tensors.
//
// A checkpoint records the SHA-256 of every tensor's bytes so that a load can
// tell a damaged or edited file from a good one (and a user can check the same
// numbers with `sha256sum` or Python's hashlib). The algorithm is small enough
// to keep here rather than to depend on a crypto library: 64 rounds over
// 64-byte blocks of big-endian words, the message padded with a 1 bit, zeros
// and its length in bits as a 64-bit big-endian number.
//
// Two implementations of the compression function, chosen at run time:
//  - x86's SHA extensions (SHA-NI: sha256rnds2/msg1/msg2, on every AMD Zen and
//    on Intel since Ice Lake/Goldmont), compiled with a target attribute so the
//    user's -march does not have to enable them;
//  - the portable one, everywhere else.
// Portable: about 280 MB/s on one core of the 2-core development machine (GCC
// 12 -O2); SHA-NI about 1.9 GB/s (Zen 5), which keeps checking a 130 MB model
// file at load time within tens of milliseconds per core.
//
// Tested against FIPS 180-4's vectors ("", "abc", the 448- and 896-bit messages, a million
// 'a') and against hashlib on every length across the padding boundaries
// (tests/io/test_sha256.cpp).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define LQER_SHA256_X86 1
#include <immintrin.h>
#endif

namespace lqer::io {

/// An incremental SHA-256: update() with the message in any number of pieces,
/// then digest() (or hex()) once.
///
///   lqer::io::sha256 h;
///   h.update(header);
///   h.update(data);
///   std::string s = h.hex();      // 64 lowercase hex digits, as sha256sum prints
class sha256 {
 public:
  static constexpr std::size_t kDigestBytes = 32;
  static constexpr std::size_t kBlockBytes = 64;
  using digest_type = std::array<std::uint8_t, kDigestBytes>;

  /// The compression function's implementations (both give the same digest).
  enum class implementation {
    portable,  ///< plain C++, any CPU
    x86_sha,   ///< x86 SHA extensions (SHA-NI) with SSSE3/SSE4.1
  };
  /// Whether this build and this CPU can run `impl`.
  static bool available(implementation impl) noexcept {
    if (impl == implementation::portable) return true;
#ifdef LQER_SHA256_X86
    static const bool has_sha = [] {
      unsigned a = 0, b = 0, c = 0, d = 0;
      __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0u), "c"(0u));
      if (a < 7) return false;
      __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1u), "c"(0u));
      const bool ssse3_sse41 = (c >> 9 & 1u) && (c >> 19 & 1u);
      __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7u), "c"(0u));
      return ssse3_sse41 && (b >> 29 & 1u);  // CPUID.(7,0):EBX bit 29 = SHA
    }();
    return has_sha;
#else
    return false;
#endif
  }
  /// The fastest implementation this CPU runs.
  static implementation best() noexcept {
    return available(implementation::x86_sha) ? implementation::x86_sha : implementation::portable;
  }

  /// A hash computed with the fastest implementation, or with `impl` (which
  /// must be available: tests compare the two).
  sha256() noexcept : impl_(best()) {}
  explicit sha256(implementation impl) noexcept : impl_(available(impl) ? impl : implementation::portable) {}

  /// Appends `bytes` to the message.
  void update(std::span<const std::byte> bytes) noexcept {
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    std::size_t n = bytes.size();
    length_ += n;
    if (fill_ != 0) {  // complete the partial block first
      const std::size_t take = std::min(n, kBlockBytes - fill_);
      std::memcpy(block_.data() + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ < kBlockBytes) return;
      compress(block_.data(), 1);
      fill_ = 0;
    }
    compress(p, n / kBlockBytes);
    p += n / kBlockBytes * kBlockBytes;
    n %= kBlockBytes;
    if (n != 0) std::memcpy(block_.data(), p, n);
    fill_ = n;
  }
  /// Appends the bytes of `s` (no terminator).
  void update(std::string_view s) noexcept { update(std::as_bytes(std::span(s.data(), s.size()))); }

  /// The digest of everything appended. Ends the message: call once (a second
  /// call would hash the padding too).
  digest_type digest() noexcept {
    // The length in bits, taken before the padding is appended. Messages of
    // 2^61 bytes or more (beyond any file) would wrap, as FIPS 180-4 allows.
    const std::uint64_t bits = length_ * 8;
    static constexpr std::array<std::byte, kBlockBytes> kPad{std::byte{0x80}};
    // 0x80, then zeros up to 56 mod 64, then the 8-byte length.
    const std::size_t pad = (fill_ < 56 ? 56 - fill_ : 120 - fill_);
    update(std::span(kPad).first(pad));
    std::array<std::byte, 8> len{};
    for (int i = 0; i < 8; ++i) len[static_cast<std::size_t>(i)] = static_cast<std::byte>(bits >> (56 - 8 * i));
    update(len);
    digest_type out{};
    for (std::size_t i = 0; i < 8; ++i)
      for (std::size_t j = 0; j < 4; ++j) out[4 * i + j] = static_cast<std::uint8_t>(state_[i] >> (24 - 8 * j));
    return out;
  }

  /// The digest as 64 lowercase hex digits. Ends the message, as digest().
  std::string hex() { return to_hex(digest()); }

  /// A digest as 64 lowercase hex digits.
  static std::string to_hex(const digest_type& d) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s(2 * kDigestBytes, '0');
    for (std::size_t i = 0; i < kDigestBytes; ++i) {
      s[2 * i] = kHex[d[i] >> 4];
      s[2 * i + 1] = kHex[d[i] & 15];
    }
    return s;
  }

 private:
  static constexpr std::uint32_t rotr(std::uint32_t x, int n) noexcept { return (x >> n) | (x << (32 - n)); }

  // The round constants K (FIPS 180-4, 4.2.2).
  static constexpr std::array<std::uint32_t, 64> kK = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  };

  /// `blocks` 64-byte blocks into the state.
  void compress(const std::uint8_t* p, std::size_t blocks) noexcept {
#ifdef LQER_SHA256_X86
    if (impl_ == implementation::x86_sha) {
      compress_x86_sha(state_.data(), p, blocks);
      return;
    }
#endif
    for (std::size_t i = 0; i < blocks; ++i) compress_portable(p + i * kBlockBytes);
  }

  /// One 64-byte block into the state (FIPS 180-4, 6.2.2).
  void compress_portable(const std::uint8_t* p) noexcept {
    std::array<std::uint32_t, 64> w{};
    for (std::size_t t = 0; t < 16; ++t)
      w[t] = (std::uint32_t{p[4 * t]} << 24) | (std::uint32_t{p[4 * t + 1]} << 16) |
             (std::uint32_t{p[4 * t + 2]} << 8) | std::uint32_t{p[4 * t + 3]};
    for (std::size_t t = 16; t < 64; ++t) {
      const std::uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      const std::uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;  // unsigned: wraps mod 2^32, as the standard says
    }
    std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    std::uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    for (std::size_t t = 0; t < 64; ++t) {
      const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[t] + w[t];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
    state_[4] += e;
    state_[5] += f;
    state_[6] += g;
    state_[7] += h;
  }

#ifdef LQER_SHA256_X86
  /// The SHA-NI compression of `blocks` blocks. sha256rnds2 keeps the state as
  /// two vectors, ABEF and CDGH, and runs two rounds per instruction on the
  /// low two words of W+K; message words come in groups of four (big-endian,
  /// hence the byte shuffle), group j ≥ 4 from groups j-4 … j-1 by
  /// W_j = msg2(msg1(W_{j-4}, W_{j-3}) + (W_{j-2}, W_{j-1}) shifted by one word, W_{j-1})
  /// — σ0, the W_{t-7} term and σ1 of FIPS 180-4's schedule, in that order.
  __attribute__((target("sha,ssse3,sse4.1"))) static void compress_x86_sha(std::uint32_t* state, const std::uint8_t* p,
                                                                           std::size_t blocks) noexcept {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state));
    __m128i hgfe = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state + 4));
    const __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    const __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    for (std::size_t blk = 0; blk < blocks; ++blk, p += kBlockBytes) {
      const __m128i abef_in = abef, cdgh_in = cdgh;
      __m128i w[4];
      for (int j = 0; j < 16; ++j) {
        __m128i& wj = w[j & 3];
        if (j < 4) {
          wj = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * j)), bswap);
        } else {
          const __m128i s0 = _mm_sha256msg1_epu32(wj, w[(j + 1) & 3]);  // W_{j-4}, W_{j-3}
          const __m128i t7 = _mm_alignr_epi8(w[(j + 3) & 3], w[(j + 2) & 3], 4);
          wj = _mm_sha256msg2_epu32(_mm_add_epi32(s0, t7), w[(j + 3) & 3]);
        }
        __m128i wk = _mm_add_epi32(wj, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kK.data() + 4 * j)));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
        wk = _mm_shuffle_epi32(wk, 0x0E);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);
      }
      abef = _mm_add_epi32(abef, abef_in);
      cdgh = _mm_add_epi32(cdgh, cdgh_in);
    }
    const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    dcba = _mm_blend_epi16(feba, dchg, 0xF0);
    hgfe = _mm_alignr_epi8(dchg, feba, 8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(state), dcba);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(state + 4), hgfe);
  }
#endif

  implementation impl_;
  // The initial hash value H(0) (FIPS 180-4, 5.3.3).
  std::array<std::uint32_t, 8> state_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<std::uint8_t, kBlockBytes> block_{};
  std::size_t fill_ = 0;      // bytes of block_ in use
  std::uint64_t length_ = 0;  // bytes appended so far
};

/// The SHA-256 of `bytes` as 64 lowercase hex digits (what `sha256sum` prints).
inline std::string sha256_hex(std::span<const std::byte> bytes) {
  sha256 h;
  h.update(bytes);
  return h.hex();
}

/// The SHA-256 of the bytes of `s`.
inline std::string sha256_hex(std::string_view s) { return sha256_hex(std::as_bytes(std::span(s.data(), s.size()))); }

}  // namespace lqer::io
