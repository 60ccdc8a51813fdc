// Nothing on the data path allocates per frame: a client and a server Mux move bytes back and
// forth (DATA one way, CREDIT the other), and a counting global operator new shows how many
// allocations the steady state makes. This binary replaces the global allocation functions,
// so it holds only this test and is not built with sanitizers (which replace them too).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pipegate/frame.h"
#include "pipegate/mux.h"

namespace {

std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_allocations{0};

void* Allocate(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t n) { return Allocate(n); }
void* operator new[](std::size_t n) { return Allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace pipegate {
namespace {

// Counts what arrives and hands it back at once, as a local pipe that keeps up would.
class Sink : public MuxCallbacks {
 public:
  void Attach(Mux* mux) { mux_ = mux; }
  void OnMuxReady() override {}
  void OnOpenRequest(uint32_t id, const OpenPayload&) override {
    mux_->Accept(id, OpenOkPayload{2, 3});
  }
  void OnStreamData(uint32_t id, const uint8_t*, size_t len) override {
    received += len;
    mux_->Consumed(id, len);
  }
  void OnStreamFin(uint32_t) override {}
  void OnStreamReset(uint32_t, ErrorCode, std::string_view) override {}
  void OnStreamStopped(uint32_t, ErrorCode, std::string_view) override {}
  void OnStreamWritable(uint32_t) override {}
  void OnStreamClosed(uint32_t) override {}

  uint64_t received = 0;

 private:
  Mux* mux_ = nullptr;
};

// Feeds everything @p from has queued into @p to, in place (no copy, no allocation here).
bool Transfer(Mux& from, Mux& to) {
  if (from.output().empty()) return false;
  Status st = to.Feed(from.output().data(), from.output().size());
  EXPECT_TRUE(st.ok()) << st.message();
  from.output().Clear();
  return true;
}

void Pump(Mux& a, Mux& b) {
  for (int i = 0; i < 1000; ++i) {
    bool moved = Transfer(a, b);
    moved = Transfer(b, a) || moved;
    if (!moved) return;
  }
  ADD_FAILURE() << "the pair never went quiet";
}

// Each iteration sends @p chunk bytes both ways on one stream and delivers them; returns the
// allocations made by @p iterations iterations after @p warmup ones.
uint64_t AllocationsPerSteadyState(bool resumable, size_t chunk, int warmup, int iterations,
                                   uint64_t* moved) {
  MuxOptions c;
  c.is_client = true;
  c.resumable = resumable;
  MuxOptions s;
  s.resumable = resumable;
  Sink client_cb, server_cb;
  Mux client(c, &client_cb);
  Mux server(s, &server_cb);
  client_cb.Attach(&client);
  server_cb.Attach(&server);
  client.Start();
  server.Start();
  Pump(client, server);
  OpenPayload open;
  open.access = 3;
  open.name = "bench";
  Result<uint32_t> id = client.Open(open);
  EXPECT_TRUE(static_cast<bool>(id));
  Pump(client, server);
  const std::vector<uint8_t> data(chunk, 0x5a);
  uint64_t allocations = 0;
  for (int i = 0; i < warmup + iterations; ++i) {
    if (i == warmup) {
      g_allocations = 0;
      g_counting = true;
    }
    EXPECT_EQ(client.SendData(*id, data.data(), data.size()), data.size());
    EXPECT_EQ(server.SendData(*id, data.data(), data.size()), data.size());
    Pump(client, server);
  }
  g_counting = false;
  allocations = g_allocations;
  *moved = client_cb.received + server_cb.received;
  return allocations;
}

TEST(DataPathAllocations, SteadyStateMakesNoAllocationPerFrame) {
  for (bool resumable : {false, true}) {
    for (size_t chunk : {size_t{64}, size_t{16384}, size_t{65536}}) {
      uint64_t moved = 0;
      const int kIterations = 2000;
      // The warm-up moves 4 MiB each way, so that the buffers have reached the size a full
      // window (1 MiB by default) needs: growing to it is allowed, once.
      const int warmup = static_cast<int>(std::max<size_t>(200, (size_t{4} << 20) / chunk));
      const uint64_t n = AllocationsPerSteadyState(resumable, chunk, warmup, kIterations, &moved);
      // 2 DATA frames (and their CREDIT) per iteration: 4,000 frames counted.
      EXPECT_EQ(moved, uint64_t{2} * chunk * static_cast<uint64_t>(warmup + kIterations));
      EXPECT_EQ(n, 0u) << "resumable=" << resumable << " chunk=" << chunk << ": " << n
                       << " allocations in " << kIterations << " iterations";
    }
  }
}

// The counter itself works (so that a zero above means something).
TEST(DataPathAllocations, TheCounterSeesAnAllocation) {
  g_allocations = 0;
  g_counting = true;
  auto* p = new std::string(100, 'x');
  g_counting = false;
  delete p;
  EXPECT_GE(g_allocations.load(), 1u);
}

}  // namespace
}  // namespace pipegate
