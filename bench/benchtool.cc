// Helpers for bench/run.sh, compiled on the fly with `g++ -O2 -std=c++20` (not part of the build).
//
//   benchtool check [EXPECTED_BYTES [EXPECTED_DIGEST]]
//       Reads stdin to EOF, prints "BYTES DIGEST SECONDS" where DIGEST is a fast 64-bit
//       position-dependent hash (not cryptographic; it catches lost, duplicated, reordered or
//       corrupted bytes) and SECONDS runs from the first byte read to EOF. Exits 1 on a
//       mismatch with the expected values. Much cheaper than sha256sum, so on a 2-core box the
//       checker is not what limits the transfer.
//   benchtool gen BYTES SEED        Writes BYTES of pseudo-random data to stdout.
//   benchtool echo SOCKET_PATH      Unix stream socket echo server (one thread per connection).
//   benchtool pingpong SOCKET_PATH SIZE WARMUP COUNT
//       Connects, does WARMUP then COUNT round trips of SIZE bytes, prints
//       "p50_us p99_us mean_us min_us max_us".
//   benchtool freeport              Prints a free TCP port on 127.0.0.1 (bind to port 0).
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "benchtool: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

// Reads until `len` bytes or EOF; returns the count.
size_t ReadFull(int fd, char* buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::read(fd, buf + got, len - got);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      Die("read");
    }
    got += static_cast<size_t>(n);
  }
  return got;
}

bool WriteFull(int fd, const char* buf, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    buf += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;

uint64_t Mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return x;
}

// Four independent lanes over 8-byte words; the stream position feeds each word so that a
// swapped or shifted block changes the digest. Word boundaries depend only on the stream offset
// because every buffer but the last is a full multiple of 32 bytes.
struct Hasher {
  uint64_t lane[4] = {1, 2, 3, 4};
  uint64_t words = 0;
  uint64_t tail = 0;
  void Block(const char* p, size_t n) {  // n % 32 == 0
    for (size_t i = 0; i < n; i += 32) {
      for (int k = 0; k < 4; k++) {
        uint64_t w;
        std::memcpy(&w, p + i + 8 * k, 8);
        lane[k] = (lane[k] ^ (w + (words + k) * kMul)) * 0xD6E8FEB86659FD93ull;
        lane[k] ^= lane[k] >> 32;
      }
      words += 4;
    }
  }
  void Tail(const char* p, size_t n) {
    for (size_t i = 0; i < n; i++)
      tail = (tail ^ static_cast<unsigned char>(p[i])) * 0x100000001B3ull;
  }
  uint64_t Digest(uint64_t bytes) const {
    uint64_t h = bytes * kMul;
    for (uint64_t l : lane) h = Mix(h ^ l) * kMul;
    return Mix(h ^ tail);
  }
};

int Check(int argc, char** argv) {
  constexpr size_t kBuf = 1 << 20;
  std::vector<char> buf(kBuf);
  Hasher h;
  uint64_t total = 0;
  Clock::time_point first{};
  bool started = false;
  for (;;) {
    // Wait for the first byte with a plain read so the clock starts at the first data.
    size_t got;
    if (!started) {
      ssize_t n;
      do n = ::read(0, buf.data(), kBuf);
      while (n < 0 && errno == EINTR);
      if (n < 0) Die("read");
      first = Clock::now();
      started = true;
      got = static_cast<size_t>(n);
      if (got > 0) got += ReadFull(0, buf.data() + got, kBuf - got);
    } else {
      got = ReadFull(0, buf.data(), kBuf);
    }
    total += got;
    size_t whole = got & ~size_t{31};
    h.Block(buf.data(), whole);
    if (got < kBuf) {
      h.Tail(buf.data() + whole, got - whole);
      break;
    }
  }
  double secs = std::chrono::duration<double>(Clock::now() - first).count();
  char digest[17];
  std::snprintf(digest, sizeof digest, "%016" PRIx64, h.Digest(total));
  std::printf("%" PRIu64 " %s %.6f\n", total, digest, secs);
  std::fflush(stdout);
  if (argc > 2 && std::strtoull(argv[2], nullptr, 10) != total) {
    std::fprintf(stderr, "benchtool check: got %" PRIu64 " bytes, expected %s\n", total, argv[2]);
    return 1;
  }
  if (argc > 3 && std::strcmp(argv[3], digest) != 0) {
    std::fprintf(stderr, "benchtool check: digest %s, expected %s\n", digest, argv[3]);
    return 1;
  }
  return 0;
}

int Gen(int argc, char** argv) {
  if (argc < 4) return 1;
  uint64_t left = std::strtoull(argv[2], nullptr, 10);
  uint64_t s = std::strtoull(argv[3], nullptr, 10) * kMul + 1;
  std::vector<uint64_t> buf(1 << 17);
  while (left > 0) {
    for (auto& w : buf) {  // splitmix64
      s += kMul;
      uint64_t z = s;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      w = z ^ (z >> 31);
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size() * 8));
    if (!WriteFull(1, reinterpret_cast<const char*>(buf.data()), n)) Die("write");
    left -= n;
  }
  return 0;
}

sockaddr_un UnixAddr(const char* path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (std::strlen(path) >= sizeof a.sun_path) {
    std::fprintf(stderr, "benchtool: socket path too long: %s\n", path);
    std::exit(2);
  }
  std::strcpy(a.sun_path, path);
  return a;
}

int Echo(int argc, char** argv) {
  if (argc < 3) return 1;
  std::signal(SIGPIPE, SIG_IGN);
  int ls = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0) Die("socket");
  ::unlink(argv[2]);
  sockaddr_un a = UnixAddr(argv[2]);
  if (::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) Die("bind");
  if (::listen(ls, 64) < 0) Die("listen");
  for (;;) {
    int c = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      Die("accept");
    }
    std::thread([c] {
      char buf[65536];
      for (;;) {
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (!WriteFull(c, buf, static_cast<size_t>(n))) break;
      }
      ::close(c);
    }).detach();
  }
}

int PingPong(int argc, char** argv) {
  if (argc < 6) return 1;
  size_t size = std::strtoul(argv[3], nullptr, 10);
  long warmup = std::strtol(argv[4], nullptr, 10);
  long count = std::strtol(argv[5], nullptr, 10);
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) Die("socket");
  sockaddr_un a = UnixAddr(argv[2]);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) Die("connect");
  std::vector<char> out(size), in(size);
  for (size_t i = 0; i < size; i++) out[i] = static_cast<char>('a' + i % 26);
  std::vector<double> us;
  us.reserve(static_cast<size_t>(count));
  for (long i = 0; i < warmup + count; i++) {
    out[0] = static_cast<char>(i);
    auto t0 = Clock::now();
    if (!WriteFull(s, out.data(), size)) Die("write");
    if (ReadFull(s, in.data(), size) != size) {
      std::fprintf(stderr, "benchtool pingpong: early EOF after %ld round trips\n", i);
      return 1;
    }
    auto t1 = Clock::now();
    if (std::memcmp(in.data(), out.data(), size) != 0) {
      std::fprintf(stderr, "benchtool pingpong: echo mismatch at round trip %ld\n", i);
      return 1;
    }
    if (i >= warmup) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  ::close(s);
  if (us.empty()) return 1;
  std::vector<double> sorted = us;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double p) {
    size_t idx = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(idx, sorted.size() - 1)];
  };
  double sum = 0;
  for (double v : us) sum += v;
  std::printf("%.1f %.1f %.1f %.1f %.1f\n", pct(0.50), pct(0.99),
              sum / static_cast<double>(us.size()), sorted.front(), sorted.back());
  return 0;
}

int FreePort() {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) Die("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) Die("bind");
  socklen_t len = sizeof a;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) < 0) Die("getsockname");
  std::printf("%u\n", ntohs(a.sin_port));
  ::close(s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "check") return Check(argc, argv);
  if (cmd == "gen") return Gen(argc, argv);
  if (cmd == "echo") return Echo(argc, argv);
  if (cmd == "pingpong") return PingPong(argc, argv);
  if (cmd == "freeport") return FreePort();
  std::fprintf(stderr, "usage: benchtool check|gen|echo|pingpong|freeport ...\n");
  return 1;
}
