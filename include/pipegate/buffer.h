#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

namespace pipegate {

/// @brief A contiguous byte queue: append at the tail, consume at the head.
///
/// Ownership: owns its storage. Thread: not thread-safe, one owner. Memory is kept between uses
/// (Clear() keeps the capacity), so a steady data path makes no heap allocation; capacity grows
/// geometrically only when asked for more room than it has.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t capacity) { Reserve(capacity); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  /// Moves leave the source empty and reusable (no storage, no bytes).
  Buffer(Buffer&& other) noexcept { MoveFrom(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) MoveFrom(other);
    return *this;
  }

  /// @return The first unconsumed byte.
  const uint8_t* data() const noexcept { return data_.get() + head_; }
  uint8_t* data() noexcept { return data_.get() + head_; }
  /// @return The number of unconsumed bytes.
  size_t size() const noexcept { return tail_ - head_; }
  bool empty() const noexcept { return tail_ == head_; }
  /// @return The allocated size.
  size_t capacity() const noexcept { return capacity_; }

  /// @brief Makes room for at least @p n more bytes at the tail and returns a pointer to it.
  /// Write into it, then call Commit() with the number of bytes written.
  uint8_t* Prepare(size_t n) {
    if (capacity_ - tail_ < n) MakeRoom(n);
    return data_.get() + tail_;
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
    if (empty()) {
      data_.reset();
      capacity_ = head_ = tail_ = 0;
    }
  }

 private:
  void MoveFrom(Buffer& other) noexcept {
    data_ = std::move(other.data_);
    capacity_ = other.capacity_;
    head_ = other.head_;
    tail_ = other.tail_;
    other.capacity_ = other.head_ = other.tail_ = 0;
  }
  void MakeRoom(size_t n) {
    // Slide the live bytes to the front when that makes enough room; else grow.
    if (head_ > 0 && capacity_ - size() >= n) {
      size_t live = size();
      std::memmove(data_.get(), data_.get() + head_, live);
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
    std::unique_ptr<uint8_t[]> next(new uint8_t[cap]);
    size_t live = size();
    if (live > 0) std::memcpy(next.get(), data_.get() + head_, live);
    data_ = std::move(next);
    capacity_ = cap;
    head_ = 0;
    tail_ = live;
  }

  std::unique_ptr<uint8_t[]> data_;
  size_t capacity_ = 0;
  size_t head_ = 0;
  size_t tail_ = 0;
};

}  // namespace pipegate
