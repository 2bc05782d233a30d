// SHA-256: FIPS 180-4's test vectors (the empty string, "abc", the 448- and 896-bit
// messages, one million 'a'), Python hashlib on every length around the 64-byte
// block's padding cases (tests/data/safetensors/expected.json), and the
// incremental interface fed in every split.
#include <doctest/doctest.h>

#include <cstddef>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "lqer/io/sha256.hpp"

using lqer::io::sha256;
using lqer::io::sha256_hex;

namespace {
/// bytes(i % 251 for i in range(n)), as the fixture script hashes them.
std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>(i % 251);
  return b;
}

/// The implementations this build and CPU run (the portable one always).
std::vector<sha256::implementation> implementations() {
  std::vector<sha256::implementation> v{sha256::implementation::portable};
  if (sha256::available(sha256::implementation::x86_sha))
    v.push_back(sha256::implementation::x86_sha);
  else
    MESSAGE("sha256: this CPU (or build) has no x86 SHA extensions; only the portable implementation is tested");
  return v;
}

std::string hex_with(sha256::implementation impl, std::span<const std::byte> b) {
  sha256 h(impl);
  h.update(b);
  return h.hex();
}
std::string hex_with(sha256::implementation impl, std::string_view s) {
  return hex_with(impl, std::as_bytes(std::span(s.data(), s.size())));
}

}  // namespace

TEST_CASE("sha256: every implementation gives the FIPS 180-4 digests and hashlib's, in any split") {
  std::ifstream in(std::string(LQER_TEST_DATA_DIR) + "/safetensors/expected.json");
  REQUIRE(in);
  const nlohmann::json lengths = nlohmann::json::parse(in)["sha256_lengths"];
  const std::string million(1'000'000, 'a');
  for (const auto impl : implementations()) {
    CAPTURE(static_cast<int>(impl));
    CHECK(hex_with(impl, std::string_view("abc")) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(hex_with(impl, million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    for (const auto& item : lengths.items()) {
      const std::string n = item.key();
      CAPTURE(n);
      const std::vector<std::byte> b = pattern(std::stoul(n));
      CHECK(hex_with(impl, b) == item.value().get<std::string>());
      // Blocks whole and through the partial-block buffer, mixed.
      sha256 h(impl);
      h.update(std::span(b).first(b.size() / 3));
      h.update(std::span(b).subspan(b.size() / 3));
      CHECK(h.hex() == item.value().get<std::string>());
    }
  }
  // The implementations agree on many blocks of varied bytes (every byte value, every word position).
  std::vector<std::byte> big(1 << 20);
  std::uint32_t x = 12345;
  for (auto& b : big) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  const std::string want = hex_with(sha256::implementation::portable, big);
  for (const auto impl : implementations()) CHECK(hex_with(impl, big) == want);
}

TEST_CASE("sha256: the FIPS 180-4 test vectors (empty, abc, 448 and 896 bits, a million a)") {
  CHECK(sha256_hex(std::string_view("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex(std::string_view("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex(std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string_view("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                                    "klmnopqrlmnopqrsmnopqrstnopqrstu")) ==
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  const std::string million(1'000'000, 'a');
  CHECK(sha256_hex(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // The same fed in pieces of 1, 63, 64 and 1000 bytes.
  for (const std::size_t piece : {std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{1000}}) {
    CAPTURE(piece);
    sha256 h;
    for (std::size_t at = 0; at < million.size(); at += piece) h.update(std::string_view(million).substr(at, piece));
    CHECK(h.hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
}

TEST_CASE("sha256 equals Python's hashlib across the padding boundaries, whole and split at every point") {
  std::ifstream in(std::string(LQER_TEST_DATA_DIR) + "/safetensors/expected.json");
  REQUIRE(in);
  const nlohmann::json lengths = nlohmann::json::parse(in)["sha256_lengths"];
  REQUIRE(lengths.size() >= 20);
  for (const auto& item : lengths.items()) {
    const std::string n = item.key();  // named: clang 14 cannot capture a structured binding
    const std::string expected = item.value().get<std::string>();
    CAPTURE(n);
    const std::vector<std::byte> b = pattern(std::stoul(n));
    CHECK(sha256_hex(b) == expected);
    if (b.size() > 200) continue;
    for (std::size_t split = 0; split <= b.size(); ++split) {
      sha256 h;
      h.update(std::span(b).first(split));
      h.update(std::span(b).subspan(split));
      CHECK(h.hex() == expected);
    }
  }
  // The digest bytes and to_hex agree.
  sha256 h;
  h.update(std::string_view("abc"));
  const sha256::digest_type d = h.digest();
  CHECK(d[0] == 0xba);
  CHECK(d[31] == 0xad);
  CHECK(sha256::to_hex(d) == sha256_hex(std::string_view("abc")));
}
