// Allocation tracking for one test program: include this header in exactly one
// translation unit of the program. It replaces the global allocation functions,
// so a test can assert "rejecting this input allocated nothing large" — the
// property that keeps a header declaring 2^60 entries from becoming a huge
// allocation.
//
// Every replaceable form that the library and libstdc++ use is replaced, the
// nothrow ones included. Replacing only `operator new(size_t)` and relying on
// the default nothrow form to forward to it is enough with a plain libstdc++,
// but under AddressSanitizer the runtime supplies its own nothrow `new`: memory
// from it (std::stable_sort's temporary buffer) then reached our `delete`, and
// ASan reported alloc-dealloc-mismatch. With every form here, allocation and
// release always go through the same pair (malloc / free).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace lqer::test {
inline std::atomic<std::size_t> g_largest_allocation{0};
inline void reset_largest_allocation() { g_largest_allocation.store(0); }
inline std::size_t largest_allocation() { return g_largest_allocation.load(); }

[[gnu::noinline]] inline void* tracked_malloc(std::size_t n) noexcept {
  std::size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
  while (n > seen && !g_largest_allocation.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
  return std::malloc(n != 0 ? n : 1);
}
}  // namespace lqer::test

// noinline: once inlined, GCC 12 pairs free() / malloc() with `operator new` /
// `operator delete` and warns -Wmismatched-new-delete, although they match.
[[gnu::noinline]] void* operator new(std::size_t n) {
  if (void* p = lqer::test::tracked_malloc(n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t n) { return ::operator new(n); }
[[gnu::noinline]] void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return lqer::test::tracked_malloc(n);
}
[[gnu::noinline]] void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return lqer::test::tracked_malloc(n);
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
