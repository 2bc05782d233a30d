// Test support: a safetensors file image re-encoded with edits, for the tests
// of the readers of lqer's own files (checkpoints, statistics files) and the
// bad-input cells of the programs that read them.
//
// The edit starts from a valid image and changes one thing: a metadata key
// set or removed, a tensor dropped, its bytes, shape or dtype changed. The
// checksums `lqer.sha256.<tensor>` are recomputed for the edited tensors, so
// that the reader meets the change itself — unless keep_checksums asks for
// the old ones (a checksum mismatch).
#pragma once

#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/io/safetensors.hpp"
#include "lqer/io/sha256.hpp"

namespace lqer::test {

struct safetensors_edit {
  std::map<std::string, std::string> metadata;  ///< keys to set; an empty value removes the key
  std::set<std::string> drop;                   ///< tensors to remove (their checksum keys stay)
  std::map<std::string, std::function<void(std::vector<std::byte>&)>> data;  ///< a tensor's bytes, changed in place
  std::map<std::string, std::vector<index_t>> shape;                         ///< a tensor's new shape
  std::map<std::string, io::safetensors_dtype> dtype;                        ///< a tensor's new dtype
  bool keep_checksums = false;  ///< keep the old checksums (a mismatch where bytes changed)

  safetensors_edit& set(const std::string& key, const std::string& value) {
    metadata[key] = value;
    return *this;
  }
};

/// The image with `e` applied, re-encoded by lqer's writer.
inline std::vector<std::byte> edited(std::span<const std::byte> image, const safetensors_edit& e) {
  const io::safetensors_file f =
      io::safetensors_file::from_bytes(std::vector<std::byte>(image.begin(), image.end()), "edited");
  std::vector<std::vector<std::byte>> keep;
  keep.reserve(f.tensors().size());
  io::safetensors_writer w;
  std::map<std::string, std::string> md = f.metadata();
  for (const auto& t : f.tensors()) {
    if (e.drop.count(t.name)) continue;
    keep.emplace_back(t.data.begin(), t.data.end());
    if (const auto it = e.data.find(t.name); it != e.data.end()) it->second(keep.back());
    const auto s = e.shape.find(t.name);
    const auto d = e.dtype.find(t.name);
    w.add(t.name, d != e.dtype.end() ? d->second : t.dtype, s != e.shape.end() ? s->second : t.shape, keep.back());
    if (!e.keep_checksums) md["lqer.sha256." + t.name] = io::sha256_hex(std::span<const std::byte>(keep.back()));
  }
  for (const auto& [k, v] : e.metadata) {
    if (v.empty())
      md.erase(k);
    else
      md[k] = v;
  }
  for (const auto& [k, v] : md) w.set_metadata(k, v);
  return w.encode();
}

/// A function for safetensors_edit::data that writes `v` over element `i` (of T).
template <class T>
std::function<void(std::vector<std::byte>&)> put(std::size_t i, T v) {
  return [=](std::vector<std::byte>& d) { std::memcpy(d.data() + i * sizeof(T), &v, sizeof(T)); };
}

}  // namespace lqer::test
