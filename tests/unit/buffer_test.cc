#include "pipegate/buffer.h"

#include <cstdint>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <utility>

#include <gtest/gtest.h>

namespace pipegate {
namespace {

std::string Text(const Buffer& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

void Append(Buffer& b, const std::string& s) { b.Append(s.data(), s.size()); }

TEST(Buffer, StartsEmptyWithoutStorage) {
  Buffer b;
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(b.capacity(), 0u);
  EXPECT_EQ(b.tail_room(), 0u);
}

TEST(Buffer, ConstructorReservesExactly) {
  Buffer b(100);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.capacity(), 100u);
  EXPECT_EQ(b.tail_room(), 100u);
}

TEST(Buffer, AppendsAndConsumesInOrder) {
  Buffer b;
  Append(b, "hello ");
  Append(b, "world");
  EXPECT_EQ(b.size(), 11u);
  EXPECT_EQ(Text(b), "hello world");
  b.Consume(6);
  EXPECT_EQ(Text(b), "world");
  EXPECT_FALSE(b.empty());
  b.Consume(5);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.size(), 0u);
}

TEST(Buffer, AppendingNothingAllocatesNothing) {
  Buffer b;
  b.Append(nullptr, 0);
  EXPECT_EQ(b.capacity(), 0u);
  EXPECT_TRUE(b.empty());
}

TEST(Buffer, FirstGrowthIs4KiBThenDoubles) {
  Buffer b;
  Append(b, "x");
  EXPECT_EQ(b.capacity(), 4096u);
  Append(b, std::string(4095, 'y'));
  EXPECT_EQ(b.capacity(), 4096u);  // Exactly full.
  EXPECT_EQ(b.tail_room(), 0u);
  Append(b, "z");
  EXPECT_EQ(b.capacity(), 8192u);
  Append(b, std::string(20000, 'w'));
  EXPECT_EQ(b.size(), 4097u + 20000u);
  EXPECT_EQ(b.capacity(), 32768u);
  EXPECT_EQ(Text(b).substr(0, 2), "xy");
  EXPECT_EQ(Text(b).substr(4095, 3), "yzw");
}

TEST(Buffer, EmptyingRewindsToTheFront) {
  Buffer b;
  Append(b, std::string(4000, 'a'));
  b.Consume(4000);
  EXPECT_EQ(b.tail_room(), 4096u);  // head and tail went back to 0.
  Append(b, std::string(4096, 'b'));
  EXPECT_EQ(b.capacity(), 4096u);
}

TEST(Buffer, SlidesLiveBytesInsteadOfGrowing) {
  Buffer b;
  Append(b, std::string(4000, 'a'));
  Append(b, "live");
  b.Consume(4000);
  ASSERT_EQ(b.capacity(), 4096u);
  EXPECT_EQ(b.tail_room(), 92u);
  // 3000 more bytes do not fit at the tail but fit once the 4 live bytes move to the front.
  Append(b, std::string(3000, 'c'));
  EXPECT_EQ(b.capacity(), 4096u);
  EXPECT_EQ(b.size(), 3004u);
  EXPECT_EQ(Text(b).substr(0, 5), "livec");
  EXPECT_EQ(b.tail_room(), 4096u - 3004u);
}

TEST(Buffer, GrowsWhenSlidingIsNotEnough) {
  Buffer b;
  Append(b, std::string(4000, 'a'));
  Append(b, "live");
  b.Consume(2000);
  Append(b, std::string(3000, 'c'));  // 2004 live + 3000 > 4096.
  EXPECT_EQ(b.capacity(), 8192u);
  EXPECT_EQ(b.size(), 5004u);
  std::string t = Text(b);
  EXPECT_EQ(t.substr(0, 2000), std::string(2000, 'a'));
  EXPECT_EQ(t.substr(2000, 5), "livec");
}

TEST(Buffer, PrepareAndCommitWriteInPlace) {
  Buffer b;
  Append(b, "ab");
  uint8_t* p = b.Prepare(3);
  ASSERT_NE(p, nullptr);
  EXPECT_GE(b.tail_room(), 3u);
  EXPECT_EQ(b.size(), 2u);  // Prepare does not change the contents.
  std::memcpy(p, "cde", 3);
  b.Commit(2);  // Only part of what was prepared.
  EXPECT_EQ(Text(b), "abcd");
  // A prepare that fits returns the current tail without moving anything.
  const uint8_t* before = b.data();
  uint8_t* q = b.Prepare(1);
  EXPECT_EQ(q, before + 4);
  EXPECT_EQ(b.data(), before);
}

TEST(Buffer, PrepareLargerThanTheRoomKeepsTheContents) {
  Buffer b;
  Append(b, "keep me");
  uint8_t* p = b.Prepare(100000);
  EXPECT_GE(b.tail_room(), 100000u);
  EXPECT_EQ(b.capacity(), 131072u);
  EXPECT_EQ(Text(b), "keep me");
  std::memset(p, 'x', 100000);
  b.Commit(100000);
  EXPECT_EQ(b.size(), 100007u);
}

TEST(Buffer, ReserveOnlyGrows) {
  Buffer b;
  b.Reserve(10);
  EXPECT_EQ(b.capacity(), 10u);
  Append(b, "0123456789");
  b.Reserve(5);
  EXPECT_EQ(b.capacity(), 10u);
  b.Consume(3);
  b.Reserve(50);
  EXPECT_EQ(b.capacity(), 50u);
  EXPECT_EQ(Text(b), "3456789");  // Reserve compacts to the front.
  EXPECT_EQ(b.tail_room(), 43u);
}

TEST(Buffer, ClearKeepsTheCapacity) {
  Buffer b;
  Append(b, std::string(5000, 'q'));
  size_t cap = b.capacity();
  b.Clear();
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.capacity(), cap);
  EXPECT_EQ(b.tail_room(), cap);
}

TEST(Buffer, ShrinkIfEmptyFreesOnlyAnEmptyBuffer) {
  Buffer b;
  Append(b, "x");
  b.ShrinkIfEmpty();
  EXPECT_EQ(b.capacity(), 4096u);
  EXPECT_EQ(Text(b), "x");
  b.Consume(1);
  b.ShrinkIfEmpty();
  EXPECT_EQ(b.capacity(), 0u);
  EXPECT_EQ(b.tail_room(), 0u);
  Append(b, "again");  // Usable after shrinking.
  EXPECT_EQ(Text(b), "again");
}

TEST(Buffer, MoveTransfersTheBytes) {
  Buffer a;
  Append(a, "moved");
  a.Consume(1);
  Buffer b(std::move(a));
  EXPECT_EQ(Text(b), "oved");
  Buffer c;
  Append(c, "old");
  c = std::move(b);
  EXPECT_EQ(Text(c), "oved");
}

TEST(Buffer, MovedFromIsEmptyAndReusable) {
  Buffer a;
  Append(a, "moved");
  Buffer b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the point of the test.
  EXPECT_EQ(a.capacity(), 0u);
  Append(a, "reused");
  EXPECT_EQ(Text(a), "reused");
  EXPECT_EQ(Text(b), "moved");
}

TEST(Buffer, BehavesLikeAQueueUnderRandomUse) {
  std::mt19937 rng(42);
  Buffer b;
  std::deque<uint8_t> model;
  uint8_t next = 0;
  for (int step = 0; step < 20000; ++step) {
    switch (rng() % 4) {
      case 0:
      case 1: {
        size_t n = rng() % 3000;
        std::string s(n, '\0');
        for (char& c : s) {
          c = static_cast<char>(next);
          model.push_back(next++);
        }
        Append(b, s);
        break;
      }
      case 2: {
        size_t n = model.empty() ? 0 : rng() % (model.size() + 1);
        b.Consume(n);
        model.erase(model.begin(), model.begin() + static_cast<std::ptrdiff_t>(n));
        break;
      }
      case 3: {
        size_t n = rng() % 5000;
        uint8_t* p = b.Prepare(n);
        ASSERT_GE(b.tail_room(), n);
        size_t k = n == 0 ? 0 : rng() % (n + 1);
        for (size_t i = 0; i < k; ++i) {
          p[i] = next;
          model.push_back(next++);
        }
        b.Commit(k);
        break;
      }
    }
    ASSERT_EQ(b.size(), model.size());
    ASSERT_EQ(b.empty(), model.empty());
    ASSERT_LE(b.size() + b.tail_room(), b.capacity());
    if (!model.empty()) {
      ASSERT_EQ(b.data()[0], model.front());
      ASSERT_EQ(b.data()[b.size() - 1], model.back());
    }
  }
  std::string all = Text(b);
  ASSERT_TRUE(std::equal(all.begin(), all.end(), model.begin(),
                         [](char c, uint8_t m) { return static_cast<uint8_t>(c) == m; }));
}

// The per-thread storage cache: tests start and end with it empty.
void EmptyCache() {
  Buffer::TrimCache(0, 0);  // Marks it.
  Buffer::TrimCache(0, 0);  // Unused since the mark: freed.
}

TEST(BufferCache, LargeStorageIsReusedByTheNextBufferThatGrows) {
  EmptyCache();
  Buffer a;
  a.Reserve(256 * 1024);
  const uint8_t* storage = a.data();
  a.ShrinkIfEmpty();
  EXPECT_EQ(a.capacity(), 0u);
  EXPECT_EQ(Buffer::cached_bytes(), 256u * 1024);

  Buffer b;
  Append(b, std::string(200 * 1024, 'x'));  // Grows to 256 KiB: the cached block fits.
  EXPECT_EQ(b.data(), storage);
  EXPECT_EQ(b.capacity(), 256u * 1024);
  EXPECT_EQ(Buffer::cached_bytes(), 0u);
  EXPECT_EQ(Text(b), std::string(200 * 1024, 'x'));
}

TEST(BufferCache, ABlockMoreThanTwiceTheRequestIsNotHandedOut) {
  EmptyCache();
  { Buffer big(1024 * 1024); }  // Its storage goes to the cache.
  EXPECT_EQ(Buffer::cached_bytes(), 1024u * 1024);
  Buffer small(Buffer::kMinCachedBlock);
  EXPECT_EQ(small.capacity(), Buffer::kMinCachedBlock);
  EXPECT_EQ(Buffer::cached_bytes(), 1024u * 1024);
  EmptyCache();
}

TEST(BufferCache, SmallStorageIsFreedNotCached) {
  EmptyCache();
  {
    Buffer b;
    Append(b, "hello");
    EXPECT_EQ(b.capacity(), 4096u);
  }
  EXPECT_EQ(Buffer::cached_bytes(), 0u);
}

TEST(BufferCache, GrowingGivesTheOldStorageBack) {
  EmptyCache();
  Buffer b(Buffer::kMinCachedBlock);
  Append(b, std::string(Buffer::kMinCachedBlock + 1, 'y'));
  EXPECT_EQ(b.capacity(), 2 * Buffer::kMinCachedBlock);
  EXPECT_EQ(Buffer::cached_bytes(), Buffer::kMinCachedBlock);
  EXPECT_EQ(Text(b), std::string(Buffer::kMinCachedBlock + 1, 'y'));
  EmptyCache();
}

TEST(BufferCache, HoldsAtMostItsLimit) {
  EmptyCache();
  {
    std::deque<Buffer> many;
    for (int i = 0; i < 48; ++i) many.emplace_back(1024 * 1024);
  }
  EXPECT_EQ(Buffer::cached_bytes(), Buffer::kMaxCachedBytes);
  EmptyCache();
  EXPECT_EQ(Buffer::cached_bytes(), 0u);
}

TEST(BufferCache, IsFreedOnlyAfterGoingUnusedForTheIdleTime) {
  EmptyCache();
  { Buffer b(512 * 1024); }
  ASSERT_EQ(Buffer::cached_bytes(), 512u * 1024);
  Buffer::TrimCache(10000);  // The first look starts the idle clock.
  Buffer::TrimCache(10999);
  EXPECT_EQ(Buffer::cached_bytes(), 512u * 1024);

  {
    Buffer taken(400 * 1024);  // Using the cache restarts the clock...
  }
  Buffer::TrimCache(11500);
  Buffer::TrimCache(12400);
  EXPECT_EQ(Buffer::cached_bytes(), 512u * 1024);
  Buffer::TrimCache(12500);  // ...and a second without use frees it.
  EXPECT_EQ(Buffer::cached_bytes(), 0u);
}

}  // namespace
}  // namespace pipegate
