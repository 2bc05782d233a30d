// use_lite — the tokenizer (see tokenizer.hpp for the rules followed here).
#include "tokenizer.hpp"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <lqer/error.hpp>
#include <nlohmann/json.hpp>

namespace use_lite {

namespace {

std::u32string to_utf32(const icu::UnicodeString& s) {
  std::u32string out;
  out.reserve(static_cast<std::size_t>(s.length()));
  for (int32_t i = 0; i < s.length(); i = s.moveIndex32(i, 1)) out.push_back(static_cast<char32_t>(s.char32At(i)));
  return out;
}

icu::UnicodeString from_utf8(std::string_view s) {
  // fromUTF8 replaces each ill-formed sequence with U+FFFD.
  return icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
}

constexpr char32_t kSpace = U' ';
constexpr char32_t kSeparator = U'\u2581';  // '▁', SentencePiece's word-boundary mark
constexpr std::size_t kMaxVocab = 1u << 20;
constexpr std::uint64_t kMaxVocabBytes = 64ull << 20;

}  // namespace

std::u32string tokenizer::nfkc(std::string_view utf8) {
  if (utf8.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max() / 2))
    throw lqer::value_error("tokenizer: a sentence of " + std::to_string(utf8.size()) + " bytes is too long");
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status))
    throw lqer::unsupported_error(std::string("tokenizer: ICU has no NFKC data: ") + u_errorName(status));
  const icu::UnicodeString normalized = norm->normalize(from_utf8(utf8), status);
  if (U_FAILURE(status))
    throw lqer::value_error(std::string("tokenizer: NFKC normalization failed: ") + u_errorName(status));
  return to_utf32(normalized);
}

vocabulary vocabulary::load(const std::filesystem::path& vocab_json) {
  const std::string name = vocab_json.string();
  std::error_code ec;
  const auto size = std::filesystem::file_size(vocab_json, ec);
  if (ec) throw lqer::io_error(name + ": cannot read: " + ec.message());
  if (size > kMaxVocabBytes)
    throw lqer::parse_error(name + ": " + std::to_string(size) + " bytes is too large for a vocabulary");
  std::ifstream in(vocab_json, std::ios::binary);
  if (!in) throw lqer::io_error(name + ": cannot open for reading");
  std::string text(static_cast<std::size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (static_cast<std::uint64_t>(in.gcount()) != size) throw lqer::io_error(name + ": short read");
  return from_json(text, name);
}

vocabulary vocabulary::from_json(std::string_view text, const std::string& file) {
  using nlohmann::json;
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw lqer::parse_error(file + ": not valid JSON: " + e.what());
  }
  if (!doc.is_array()) throw lqer::parse_error(file + ": expected a list of [piece, score] pairs");
  if (doc.size() > kMaxVocab)  // the lower bound is the tokenizer's (from_vocabulary)
    throw lqer::parse_error(file + ": " + std::to_string(doc.size()) + " entries; expected at most " +
                            std::to_string(kMaxVocab));
  vocabulary v;
  v.pieces.reserve(doc.size());
  v.scores.reserve(doc.size());
  for (std::size_t id = 0; id < doc.size(); ++id) {
    const json& e = doc[id];
    const std::string where = file + ": entry " + std::to_string(id);
    if (!e.is_array() || e.size() != 2 || !e[0].is_string())
      throw lqer::parse_error(where + " is not a [piece, score] pair");
    if (!(e[1].is_number() || e[1].is_null())) throw lqer::parse_error(where + ": the score is not a number or null");
    v.pieces.push_back(e[0].get<std::string>());
    v.scores.push_back(e[1].is_null() ? 0.0 : e[1].get<double>());  // JS: null + x == x
  }
  return v;
}

tokenizer tokenizer::from_vocabulary(const vocabulary& v, const std::string& file) {
  if (v.pieces.size() != v.scores.size())
    throw lqer::parse_error(file + ": " + std::to_string(v.pieces.size()) + " pieces but " +
                            std::to_string(v.scores.size()) + " scores");
  if (v.pieces.size() <= kReserved || v.pieces.size() > kMaxVocab)
    throw lqer::parse_error(file + ": " + std::to_string(v.pieces.size()) + " entries; expected more than " +
                            std::to_string(kReserved) + " and at most " + std::to_string(kMaxVocab));
  tokenizer t;
  t.nodes_.emplace_back();  // root
  t.piece_utf16_len_.resize(v.pieces.size());
  for (std::size_t id = 0; id < v.pieces.size(); ++id) {
    const std::string where = file + ": entry " + std::to_string(id);
    if (!std::isfinite(v.scores[id])) throw lqer::parse_error(where + ": the score is not finite");
    const icu::UnicodeString piece = from_utf8(v.pieces[id]);
    // The backtrack steps back by this length: a zero would never terminate
    // (in the wrapper too). Only id 0 among the reserved ids is ever emitted.
    if (piece.length() == 0 && (id == 0 || id >= kReserved)) throw lqer::parse_error(where + ": empty piece");
    t.piece_utf16_len_[id] = piece.length();
    if (id < kReserved) continue;

    std::int32_t node = 0;
    for (const char32_t c : to_utf32(piece)) {
      const auto [it, inserted] = t.edges_.try_emplace(edge_key(node, c), static_cast<std::int32_t>(t.nodes_.size()));
      if (inserted) t.nodes_.emplace_back();
      node = it->second;
    }
    // Last one wins for a duplicated piece (see the header, rule 3).
    t.nodes_[static_cast<std::size_t>(node)] = {static_cast<std::int32_t>(id), v.scores[id]};
  }
  return t;
}

std::vector<std::int32_t> tokenizer::encode(std::string_view utf8) const {
  std::u32string s = nfkc(utf8);
  if (!s.empty()) {
    for (char32_t& c : s)
      if (c == kSpace) c = kSeparator;
    s.insert(s.begin(), kSeparator);
  }
  const std::size_t n = s.size();

  // The lattice: candidates grouped by end position. Building it with the
  // start position in the outer loop lists each end's candidates in ascending
  // start order, the order the wrapper visits them (JS iterates an object's
  // integer keys in ascending order).
  struct candidate {
    std::size_t start;
    std::int32_t id;
    double score;
  };
  std::vector<std::vector<candidate>> ending_at(n + 1);
  for (std::size_t i = 0; i < n; ++i) {
    bool matched = false;
    std::int32_t node = 0;
    for (std::size_t j = i; j < n; ++j) {
      const auto it = edges_.find(edge_key(node, s[j]));
      if (it == edges_.end()) break;
      node = it->second;
      const trie_node& tn = nodes_[static_cast<std::size_t>(node)];
      if (tn.id >= 0) {
        ending_at[j + 1].push_back({i, tn.id, tn.score});
        matched = true;
      }
    }
    if (!matched) ending_at[i + 1].push_back({i, 0, 0.0});
  }

  std::vector<double> best(n + 1, 0.0);
  std::vector<std::int32_t> words(n + 1, 0);
  for (std::size_t end = 1; end <= n; ++end)
    for (const candidate& c : ending_at[end]) {
      const double score = c.score + best[c.start];
      if (best[end] == 0.0 || score >= best[end]) {
        best[end] = score;
        words[end] = c.id;
      }
    }

  // Backtrack (ids come out last first), merging runs of unknowns as we go:
  // a run is a run in either direction.
  std::vector<std::int32_t> ids;
  bool previous_unknown = false;
  for (std::ptrdiff_t pos = static_cast<std::ptrdiff_t>(n); pos > 0;) {
    const std::int32_t id = words[static_cast<std::size_t>(pos)];
    if (!(previous_unknown && id == 0)) ids.push_back(id);
    previous_unknown = id == 0;
    pos -= piece_utf16_len_[static_cast<std::size_t>(id)];
  }
  return {ids.rbegin(), ids.rend()};
}

}  // namespace use_lite
