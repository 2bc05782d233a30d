// use_lite — the USE-lite tokenizer: SentencePiece unigram, exactly as the
// official JS wrapper (@energetic-ai/embeddings, after
// @tensorflow-models/universal-sentence-encoder) runs it, quirks included.
//
// The rules (USE_LITE.md, and two more that reading the wrapper adds, marked *):
//  1. NFKC-normalize the UTF-8 input (ICU's Normalizer2, the same library
//     node's String.prototype.normalize uses). No lowercasing: the vocabulary
//     is cased. No trimming.
//  2. Every U+0020 becomes U+2581 '▁'; a non-empty string gets one '▁' in front.
//  3. Vocabulary: vocab.json is a list of [piece, score]; the id is the index.
//     Ids 0–5 (unknown, <s>, </s>, three extras) are never matched. A null
//     score counts as 0.
//     * A piece listed twice (USE-lite lists "”5" three times: ids 230, 238,
//       4464) keeps only its last id and score: the wrapper inserts pieces
//       into a trie in id order and each insert overwrites the node.
//  4. Lattice: at each code-point position, every vocabulary piece that starts
//     there; if none does, one single-code-point candidate with id 0, score 0.
//  5. Viterbi, in double precision (JS numbers): best[0] = 0; for each end
//     position in ascending order, for each candidate ending there in
//     ascending start order, score = piece score + best[start]; it is taken
//     when best[end] == 0 || score >= best[end]. 0 doubles as "unset" (a real
//     score of exactly 0 is overwritten too), and ties go to the later start.
//     A position no candidate ends at keeps best = 0 and id 0.
//  6. Backtrack from the end: emit words[end], step back by the length of that
//     id's vocabulary piece.
//     * The length is the piece's length in UTF-16 code units (JS .length),
//       also for id 0 (the piece "\uFFFD", length 1): the same as code points
//       for every piece of USE-lite's vocabulary (none is outside the BMP).
//  7. Runs of consecutive unknown ids (0) merge into one. No BOS/EOS.
// The model, not the tokenizer, drops positions ≥ 128 (encoder::kMaxTokens).
//
// Input bytes that are not valid UTF-8 are replaced by U+FFFD per ill-formed
// sequence (ICU's rule; node's UTF-8 decoder does the same).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace use_lite {

/// What a tokenizer is built from: vocab.json's [piece, score] pairs in id
/// order, a null score read as 0 (rule 3). A model file stores it as is
/// (checkpoint.hpp), so the tokenizer it rebuilds is the same.
struct vocabulary {
  std::vector<std::string> pieces;  ///< UTF-8, as vocab.json spells them
  std::vector<double> scores;       ///< as JSON's numbers (JS doubles)

  /// Reads vocab.json (parse_error / io_error naming the file).
  static vocabulary load(const std::filesystem::path& vocab_json);
  /// From vocab.json's text; `file` names it in error messages.
  static vocabulary from_json(std::string_view text, const std::string& file);
};

class tokenizer {
 public:
  /// Reads vocab.json (parse_error / io_error naming the file).
  static tokenizer load(const std::filesystem::path& vocab_json) {
    return from_vocabulary(vocabulary::load(vocab_json), vocab_json.string());
  }
  /// From vocab.json's text; `file` names it in error messages.
  static tokenizer from_json(std::string_view text, const std::string& file) {
    return from_vocabulary(vocabulary::from_json(text, file), file);
  }
  /// From a vocabulary (parse_error naming `file` for one no tokenizer can
  /// run: too few or too many entries, lengths that differ, an empty piece
  /// that could be emitted).
  static tokenizer from_vocabulary(const vocabulary& v, const std::string& file);

  /// The token ids of one sentence (not truncated).
  std::vector<std::int32_t> encode(std::string_view utf8) const;

  /// Number of vocabulary entries (ids are 0 … size()−1).
  std::size_t size() const noexcept { return piece_utf16_len_.size(); }

  /// NFKC of `utf8`, as code points (exposed for tests).
  static std::u32string nfkc(std::string_view utf8);

 private:
  struct trie_node {
    std::int32_t id = -1;  ///< the vocabulary id ending here, or -1
    double score = 0.0;
  };
  static constexpr int kReserved = 6;
  /// Trie edges keyed by (node index << 21) | code point (code points < 2^21).
  static std::uint64_t edge_key(std::int32_t node, char32_t c) noexcept {
    return (static_cast<std::uint64_t>(node) << 21) | static_cast<std::uint64_t>(c);
  }

  std::vector<trie_node> nodes_;  // nodes_[0] is the root
  std::unordered_map<std::uint64_t, std::int32_t> edges_;
  std::vector<std::int32_t> piece_utf16_len_;  // per id, for the backtrack
};

}  // namespace use_lite
