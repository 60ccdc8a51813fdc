#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace pipegate {

/// @brief A contiguous byte queue: append at the tail, consume at the head.
///
/// Ownership: owns its storage. Thread: not thread-safe, one owner. Memory is kept between uses
/// (Clear() keeps the capacity), so a steady data path makes no heap allocation; capacity grows
/// geometrically only when asked for more room than it has.
///
/// Storage of kMinCachedBlock bytes or more that a Buffer lets go of goes to a cache of the
/// thread that frees it (at most kMaxCachedBytes), and a Buffer that grows takes a block from
/// the cache of its thread first. Streams that start and end (each growing a replay buffer or
/// a write queue to its window) then reuse memory that is already mapped instead of
/// allocating and page-faulting it in again; TrimCache() gives the cache back once it has
/// gone unused for a second.
class Buffer {
 public:
  static constexpr size_t kMinCachedBlock = 64 * 1024;
  static constexpr size_t kMaxCachedBytes = 32u << 20;

  Buffer() = default;
  explicit Buffer(size_t capacity) { Reserve(capacity); }
  ~Buffer() { FreeStorage(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  /// Moves leave the source empty and reusable (no storage, no bytes).
  Buffer(Buffer&& other) noexcept { MoveFrom(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) MoveFrom(other);
    return *this;
  }

  /// @brief Frees the calling thread's cached blocks if none was taken since a call at least
  /// @p idle_ms earlier (@p now_ms: any monotonic clock in milliseconds, e.g. uv_now).
  /// Thread: frees only the calling thread's cache.
  static void TrimCache(uint64_t now_ms, uint64_t idle_ms = 1000) noexcept;
  /// @return Bytes in the calling thread's cache (for tests).
  static size_t cached_bytes() noexcept;

  /// @return The first unconsumed byte.
  const uint8_t* data() const noexcept { return data_ + head_; }
  uint8_t* data() noexcept { return data_ + head_; }
  /// @return The number of unconsumed bytes.
  size_t size() const noexcept { return tail_ - head_; }
  bool empty() const noexcept { return tail_ == head_; }
  /// @return The allocated size.
  size_t capacity() const noexcept { return capacity_; }

  /// @brief Makes room for at least @p n more bytes at the tail and returns a pointer to it.
  /// Write into it, then call Commit() with the number of bytes written.
  uint8_t* Prepare(size_t n) {
    if (capacity_ - tail_ < n) MakeRoom(n);
    return data_ + tail_;
  }
  /// @return The room at the tail without growing.
  size_t tail_room() const noexcept { return capacity_ - tail_; }
  /// @brief Marks @p n bytes after the tail as written.
  void Commit(size_t n) noexcept { tail_ += n; }

  /// @brief Appends @p n bytes.
  void Append(const void* p, size_t n) {
    if (n == 0) return;
    std::memcpy(Prepare(n), p, n);
    tail_ += n;
  }
  /// @brief Drops @p n bytes from the head.
  void Consume(size_t n) noexcept {
    head_ += n;
    if (head_ == tail_) head_ = tail_ = 0;
  }
  /// @brief Drops everything, keeps the capacity.
  void Clear() noexcept { head_ = tail_ = 0; }
  /// @brief Ensures a capacity of at least @p n bytes.
  void Reserve(size_t n) {
    if (n > capacity_) Grow(n);
  }
  /// @brief Frees the storage if it is empty (for idle streams).
  void ShrinkIfEmpty() noexcept {
    if (empty()) FreeStorage();
  }

 private:
  /// @brief Storage of at least @p want bytes (from the cache if it has a block of up to twice
  /// that); its size goes to @p got.
  static uint8_t* Allocate(size_t want, size_t* got);
  /// @brief Gives storage back: to the cache if it is large and the cache has room, else free.
  static void Release(uint8_t* p, size_t size) noexcept;

  void FreeStorage() noexcept {
    if (data_ != nullptr) Release(data_, capacity_);
    data_ = nullptr;
    capacity_ = head_ = tail_ = 0;
  }
  void MoveFrom(Buffer& other) noexcept {
    FreeStorage();
    data_ = other.data_;
    capacity_ = other.capacity_;
    head_ = other.head_;
    tail_ = other.tail_;
    other.data_ = nullptr;
    other.capacity_ = other.head_ = other.tail_ = 0;
  }
  void MakeRoom(size_t n) {
    // Slide the live bytes to the front when that makes enough room; else grow.
    if (head_ > 0 && capacity_ - size() >= n) {
      size_t live = size();
      std::memmove(data_, data_ + head_, live);
      head_ = 0;
      tail_ = live;
      return;
    }
    size_t want = size() + n;
    size_t cap = capacity_ < 4096 ? 4096 : capacity_;
    while (cap < want) cap *= 2;
    Grow(cap);
  }
  void Grow(size_t cap) {
    size_t got = 0;
    uint8_t* next = Allocate(cap, &got);
    size_t live = size();
    if (live > 0) std::memcpy(next, data_ + head_, live);
    if (data_ != nullptr) Release(data_, capacity_);
    data_ = next;
    capacity_ = got;
    head_ = 0;
    tail_ = live;
  }

  uint8_t* data_ = nullptr;
  size_t capacity_ = 0;
  size_t head_ = 0;
  size_t tail_ = 0;
};

}  // namespace pipegate
