// llama — the byte-level BPE tokenizer of a GGUF model (tokenizer.ggml.model =
// "gpt2"), built from the file's metadata alone: SmolLM2-135M-Instruct's, and
// any other file whose pre-tokenizer is one of those named below.
//
// What the metadata holds (SmolLM2-135M-Instruct.Q4_1.gguf):
//   tokenizer.ggml.model          "gpt2"    byte-level BPE
//   tokenizer.ggml.pre            "smollm"  names the pre-tokenizer's split rules
//   tokenizer.ggml.tokens         49152 strings, in the GPT-2 byte alphabet
//   tokenizer.ggml.token_type     49152 int32: 1 normal, 3 control (ids 0–16:
//                                 <|endoftext|>, <|im_start|>, <|im_end|>, <repo_name>, …)
//   tokenizer.ggml.merges         48900 strings "left right", best first
//   tokenizer.ggml.bos/eos/unknown/padding_token_id   1, 2, 0, 2
//   tokenizer.ggml.add_bos_token  false (add_eos_token absent: false)
//   tokenizer.ggml.add_space_prefix false, tokenizer.chat_template (not used here)
//
// Encoding, in the order HF `tokenizers` (and llama.cpp) apply it:
//  1. Input bytes that are not valid UTF-8 become U+FFFD, one per maximal
//     ill-formed subpart (the Unicode recommendation: what Python's
//     bytes.decode(errors="replace") does before HF sees a str, and ICU).
//  2. Special tokens: every control (type 3) and user-defined (type 4) token is
//     found in the text, leftmost-longest, and emitted as its id (HF's added
//     tokens, matched with split_special_tokens=False, its default; llama.cpp
//     with parse_special). The text between them is tokenized on its own.
//  3. Pre-tokenizer: the regexes that llama.cpp's src/llama-vocab.cpp assigns to
//     the `pre` name, applied one after another as its unicode.cpp does — each
//     splits every piece of the previous one into its matches and the gaps
//     between them (HF's Split, behavior "isolated"). For "smollm":
//        \p{N}                          every digit on its own (HF's Digits(individual_digits))
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
//                                       GPT-2's (HF's ByteLevel(use_regex) adds |\s+,
//                                       which only turns the gaps into matches)
//     \p{L} = general category L*, \p{N} = N*, \s = White_Space (ICU).
//  4. Each piece's UTF-8 bytes → GPT-2's byte-to-unicode alphabet (printable
//     bytes stand for themselves, the other 68 are U+0100…), then BPE: start
//     from one symbol per byte, repeatedly merge the adjacent pair whose merge
//     has the lowest rank (the leftmost one on a tie) until none applies. A
//     byte without a token of its own is dropped first (HF's BPE without an
//     unknown token; SmolLM2 lacks 21 bytes, most never in valid UTF-8).
//  5. BOS in front if add_bos_token, EOS behind if add_eos_token (and asked).
//
// Decoding maps every normal token's characters back through the byte table
// and emits control/user-defined tokens' text verbatim; the result is bytes
// (a prefix of a token sequence may end inside a UTF-8 character).
//
// Errors are lqer's types (lqer/error.hpp), each naming the file: a missing or
// mistyped key is value_error, a vocabulary that contradicts itself (a merge
// naming an unknown token, an id out of range, counts
// that disagree) parse_error, a model or pre-tokenizer this file does not know
// unsupported_error.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lqer::io {
class gguf_file;
}

namespace llama {

/// llama.cpp's token types (enum llama_token_type), as tokenizer.ggml.token_type stores them.
enum class token_type : std::int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

/// The split rules a `tokenizer.ggml.pre` name stands for (see the file comment).
enum class pre_rules {
  gpt2,    ///< GPT-2's regex alone: "gpt-2", "mpt", "olmo", "jais"
  digits,  ///< \p{N} isolated, then GPT-2's: "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"
};

/// Everything a tokenizer is made of, as the GGUF metadata states it; also the
/// way to build one by hand (tests).
struct vocab_spec {
  std::string model = "gpt2";       ///< tokenizer.ggml.model
  std::string pre = "smollm";       ///< tokenizer.ggml.pre
  std::vector<std::string> tokens;  ///< id → text (GPT-2 byte alphabet for normal tokens)
  std::vector<token_type> types;    ///< id → type; empty: all normal
  std::vector<std::string> merges;  ///< "left right", rank = index
  std::int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;  ///< -1: none
  bool add_bos = false, add_eos = false;
};

/// The tokenizer.ggml.* metadata of an opened GGUF file as a spec, checked
/// for types (what from_gguf builds from; a quantized model file stores it).
vocab_spec read_vocab_spec(const lqer::io::gguf_file& file);

class tokenizer {
 public:
  using id = std::int32_t;

  /// From an opened GGUF file's tokenizer.ggml.* metadata (see the file comment).
  static tokenizer from_gguf(const lqer::io::gguf_file& file);
  /// From a spec; `name` starts every error message (a file name, or "test").
  static tokenizer from_spec(vocab_spec spec, std::string name);

  /// The ids of `text` (any bytes). `add_special`: BOS / EOS as the file asks
  /// (HF's add_special_tokens); `parse_special`: special tokens written in the
  /// text become their ids (false: they are tokenized as plain text, HF's
  /// split_special_tokens=True).
  std::vector<id> encode(std::string_view text, bool add_special = true, bool parse_special = true) const;

  /// The bytes of a token sequence; value_error for an id out of range.
  std::string decode(std::span<const id> ids) const;
  /// The bytes one token stands for.
  std::string token_bytes(id token) const;

  /// The pieces step 3 cuts plain text (no special tokens) into, as UTF-8
  /// (invalid input already replaced): exposed for tests.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  std::size_t size() const noexcept { return tokens_.size(); }
  const std::string& token_text(id token) const;
  token_type type(id token) const;
  /// The id of a token's exact text, or -1.
  id find(std::string_view text) const;
  id bos() const noexcept { return bos_; }
  id eos() const noexcept { return eos_; }
  id unk() const noexcept { return unk_; }
  id pad() const noexcept { return pad_; }
  bool add_bos() const noexcept { return add_bos_; }
  bool add_eos() const noexcept { return add_eos_; }
  const std::string& pre_name() const noexcept { return pre_name_; }
  pre_rules rules() const noexcept { return rules_; }
  std::size_t merge_count() const noexcept { return merges_.size(); }
  /// The token of byte b's one character, or -1 (then encode drops that byte).
  id byte_token(std::uint8_t b) const noexcept { return byte_token_[b]; }

 private:
  struct merge {
    std::int32_t rank;
    id result;
  };
  static std::uint64_t pair_key(id a, id b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  /// BPE of one pre-token piece (UTF-8 bytes), appended to `out`.
  void bpe(std::string_view piece, std::vector<id>& out) const;
  /// Steps 3–4 on text without special tokens; `cache` holds each piece's ids.
  void encode_plain(std::string_view utf8, std::vector<id>& out,
                    std::unordered_map<std::string, std::vector<id>>& cache) const;

  std::string name_;
  std::string pre_name_;
  pre_rules rules_ = pre_rules::digits;
  std::vector<std::string> tokens_;
  std::vector<token_type> types_;
  std::unordered_map<std::string, id> by_text_;
  std::unordered_map<std::uint64_t, merge> merges_;
  std::array<id, 256> byte_token_{};       ///< the token of each byte's single character, or -1
  std::vector<id> specials_;               ///< control and user-defined tokens, longest first
  std::array<bool, 256> special_first_{};  ///< whether some special token starts with this byte
  id bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1;
  bool add_bos_ = false, add_eos_ = false;
};

/// GPT-2's byte-to-unicode table: the code point byte b is written as.
char32_t byte_to_unicode(std::uint8_t b) noexcept;

/// `utf8` with each maximal ill-formed subpart replaced by U+FFFD (step 1).
std::string sanitize_utf8(std::string_view utf8);

}  // namespace llama
