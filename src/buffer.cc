#include "pipegate/buffer.h"

#include <array>

namespace pipegate {

namespace {

// One thread's blocks. Thread: only its own thread touches it.
struct BlockCache {
  struct Block {
    uint8_t* data;
    size_t size;
  };
  static constexpr size_t kMaxBlocks = 64;

  std::array<Block, kMaxBlocks> blocks{};
  size_t count = 0;
  size_t bytes = 0;
  bool taken = false;    ///< A block was taken since the last TrimCache() mark.
  uint64_t mark_ms = 0;  ///< When TrimCache() last saw the cache in use.
  bool marked = false;

  void FreeAll() noexcept {
    for (size_t i = 0; i < count; ++i) delete[] blocks[i].data;
    count = 0;
    bytes = 0;
  }
  ~BlockCache();
};

// Trivially destructible, so it stays readable while the thread's other thread_locals are
// destroyed: a Buffer freed after the cache is gone (a thread_local or static one) frees its
// storage directly.
thread_local bool t_cache_gone = false;
thread_local BlockCache t_cache;

BlockCache::~BlockCache() {
  FreeAll();
  t_cache_gone = true;
}

}  // namespace

uint8_t* Buffer::Allocate(size_t want, size_t* got) {
  if (want >= kMinCachedBlock && !t_cache_gone) {
    BlockCache& c = t_cache;
    // The smallest block that fits and is at most twice the request.
    size_t best = c.count;
    for (size_t i = 0; i < c.count; ++i) {
      const size_t size = c.blocks[i].size;
      if (size >= want && size / 2 <= want && (best == c.count || size < c.blocks[best].size)) {
        best = i;
      }
    }
    if (best != c.count) {
      const BlockCache::Block b = c.blocks[best];
      c.blocks[best] = c.blocks[--c.count];
      c.bytes -= b.size;
      c.taken = true;
      *got = b.size;
      return b.data;
    }
  }
  *got = want;
  return new uint8_t[want];
}

void Buffer::Release(uint8_t* p, size_t size) noexcept {
  if (size >= kMinCachedBlock && !t_cache_gone) {
    BlockCache& c = t_cache;
    if (c.count < BlockCache::kMaxBlocks && c.bytes + size <= kMaxCachedBytes) {
      c.blocks[c.count++] = {p, size};
      c.bytes += size;
      return;
    }
  }
  delete[] p;
}

void Buffer::TrimCache(uint64_t now_ms, uint64_t idle_ms) noexcept {
  if (t_cache_gone) return;
  BlockCache& c = t_cache;
  if (c.count == 0) {
    c.marked = false;
    return;
  }
  if (c.taken || !c.marked) {
    c.taken = false;
    c.marked = true;
    c.mark_ms = now_ms;
    return;
  }
  if (now_ms - c.mark_ms >= idle_ms) {
    c.FreeAll();
    c.marked = false;
  }
}

size_t Buffer::cached_bytes() noexcept { return t_cache_gone ? 0 : t_cache.bytes; }

}  // namespace pipegate
