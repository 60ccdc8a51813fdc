// Helpers for bench/run.sh, compiled on the fly with `g++ -O2 -std=c++20` (not part of the build).
//
//   benchtool check [EXPECTED_BYTES [EXPECTED_DIGEST]]
//       Reads stdin to EOF, prints "BYTES DIGEST SECONDS" where DIGEST is a fast 64-bit
//       position-dependent hash (not cryptographic; it catches lost, duplicated, reordered or
//       corrupted bytes) and SECONDS runs from the first byte read to EOF. Exits 1 on a
//       mismatch with the expected values. Much cheaper than sha256sum, so on a 2-core box the
//       checker is not what limits the transfer.
//   benchtool sha256 [EXPECTED_BYTES [EXPECTED_DIGEST]]
//       The same with SHA-256 (OpenSSL's) as DIGEST: the reader a user checking a transfer
//       would run, for the throughput rows "with a SHA-256 reader". Needs -lcrypto.
//   benchtool gen BYTES SEED        Writes BYTES of pseudo-random data to stdout.
//   benchtool echo SOCKET_PATH      Unix stream socket echo server (one thread per connection).
//   benchtool pingpong SOCKET_PATH SIZE WARMUP COUNT
//       Connects, does WARMUP then COUNT round trips of SIZE bytes, prints
//       "p50_us p99_us mean_us min_us max_us".
//   benchtool freeport              Prints a free TCP port on 127.0.0.1 (bind to port 0).
//   benchtool serve SOCKET_PATH FILE BYTES
//       Unix stream socket server: sends the first BYTES of FILE to every connection, then
//       closes it (one thread per connection).
//   benchtool multi SOCKET_PATH N BYTES DIGEST
//       Opens N connections at once, reads each to EOF in its own thread and checks each like
//       `check BYTES DIGEST`; prints "TOTAL_BYTES SECONDS", SECONDS from the first byte of any
//       stream to the EOF of the last. Exits 1 if any stream is short or corrupt.
//   benchtool connrate SOCKET_PATH COUNT SECONDS
//       Up to COUNT times (or until SECONDS have passed): connect, send 1 byte, read the echo,
//       close. Prints "DONE SECONDS PER_SECOND".
//   benchtool spawnrate COUNT SECONDS CMD [ARG...]
//       Up to COUNT times (or until SECONDS have passed): runs CMD with 1 byte ("x") on stdin
//       and checks that stdout is exactly "x" and the exit status 0. Prints
//       "DONE SECONDS PER_SECOND".
//   benchtool eecho SOCKET_PATH     Unix stream socket echo server, one thread, epoll (for
//                                   thousands of idle connections).
//   benchtool idle SOCKET_PATH N    Opens N connections to an echo socket, one byte round trip
//       on each (so each is open end to end), prints "ready N" (or "failed K REASON" after K
//       good ones), then holds them until killed.
//   benchtool relay LISTEN CONNECT
//       The least a relay process can do: LISTEN and CONNECT are unix:PATH or tcp:PORT (on
//       127.0.0.1). For every connection accepted on LISTEN it connects to CONNECT, then moves
//       bytes both ways, all pairs in one epoll loop: one recv and one write per message, no
//       encryption and no framing. Two of them in a chain (unix -> relay -> tcp -> relay ->
//       unix) are the floor of any tunnel built from two relay processes, as pipegate, socat,
//       stunnel and ssh -L all are.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <openssl/evp.h>

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

// Reads stdin to EOF in 1 MiB blocks and gives each to @p block (the last one may be short;
// @p block learns which is last). Returns the byte count; @p secs runs from the first byte read
// (a plain read, so the clock starts at the first data) to EOF.
template <typename Block>
uint64_t ReadTimed(Block block, double* secs) {
  constexpr size_t kBuf = 1 << 20;
  std::vector<char> buf(kBuf);
  uint64_t total = 0;
  Clock::time_point first{};
  bool started = false;
  for (;;) {
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
    block(buf.data(), got, got < kBuf);
    if (got < kBuf) break;
  }
  *secs = std::chrono::duration<double>(Clock::now() - first).count();
  return total;
}

// Prints "BYTES DIGEST SECONDS" and compares with the expected values of argv[2] and argv[3].
int ReportCheck(const char* cmd, int argc, char** argv, uint64_t total, const char* digest,
                double secs) {
  std::printf("%" PRIu64 " %s %.6f\n", total, digest, secs);
  std::fflush(stdout);
  if (argc > 2 && std::strtoull(argv[2], nullptr, 10) != total) {
    std::fprintf(stderr, "benchtool %s: got %" PRIu64 " bytes, expected %s\n", cmd, total, argv[2]);
    return 1;
  }
  if (argc > 3 && std::strcmp(argv[3], digest) != 0) {
    std::fprintf(stderr, "benchtool %s: digest %s, expected %s\n", cmd, digest, argv[3]);
    return 1;
  }
  return 0;
}

int Check(int argc, char** argv) {
  Hasher h;
  double secs = 0;
  uint64_t total = ReadTimed(
      [&h](const char* p, size_t n, bool last) {
        size_t whole = n & ~size_t{31};
        h.Block(p, whole);
        if (last) h.Tail(p + whole, n - whole);
      },
      &secs);
  char digest[17];
  std::snprintf(digest, sizeof digest, "%016" PRIx64, h.Digest(total));
  return ReportCheck("check", argc, argv, total, digest, secs);
}

int Sha256Check(int argc, char** argv) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) Die("EVP sha256");
  double secs = 0;
  uint64_t total = ReadTimed(
      [ctx](const char* p, size_t n, bool) {
        if (EVP_DigestUpdate(ctx, p, n) != 1) Die("EVP_DigestUpdate");
      },
      &secs);
  unsigned char md[32];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, md, &len) != 1 || len != sizeof md) Die("EVP_DigestFinal");
  EVP_MD_CTX_free(ctx);
  char digest[65];
  for (unsigned i = 0; i < len; ++i) std::snprintf(digest + 2 * i, 3, "%02x", md[i]);
  return ReportCheck("sha256", argc, argv, total, digest, secs);
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

// 127.0.0.1:@p port.
sockaddr_in Loopback(uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

int FreePort() {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) Die("socket");
  sockaddr_in a = Loopback(0);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) Die("bind");
  socklen_t len = sizeof a;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) < 0) Die("getsockname");
  std::printf("%u\n", ntohs(a.sin_port));
  ::close(s);
  return 0;
}

int ConnectUnix(const char* path) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  sockaddr_un a = UnixAddr(path);
  while (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
    if (errno == EINTR) continue;
    int e = errno;
    ::close(s);
    errno = e;
    return -1;
  }
  return s;
}

int ListenUnix(const char* path, int backlog) {
  int ls = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0) Die("socket");
  ::unlink(path);
  sockaddr_un a = UnixAddr(path);
  if (::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) Die("bind");
  if (::listen(ls, backlog) < 0) Die("listen");
  return ls;
}

int Serve(int argc, char** argv) {
  if (argc < 5) return 1;
  std::signal(SIGPIPE, SIG_IGN);
  std::string file = argv[3];
  uint64_t bytes = std::strtoull(argv[4], nullptr, 10);
  int ls = ListenUnix(argv[2], 128);
  for (;;) {
    int c = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      Die("accept");
    }
    std::thread([c, file, bytes] {
      int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
      off_t off = 0;
      while (fd >= 0 && static_cast<uint64_t>(off) < bytes) {
        ssize_t n = ::sendfile(
            c, fd, &off,
            static_cast<size_t>(std::min<uint64_t>(bytes - static_cast<uint64_t>(off), 1 << 20)));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
      }
      if (fd >= 0) ::close(fd);
      ::close(c);
    }).detach();
  }
}

int Multi(int argc, char** argv) {
  if (argc < 6) return 1;
  int n = std::atoi(argv[3]);
  uint64_t want = std::strtoull(argv[4], nullptr, 10);
  std::string digest_want = argv[5];
  if (n < 1 || n > 1024) return 1;
  std::vector<int> fds(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) {
    fds[static_cast<size_t>(i)] = ConnectUnix(argv[2]);
    if (fds[static_cast<size_t>(i)] < 0) Die("connect");
  }
  std::vector<Clock::time_point> first(static_cast<size_t>(n)), last(static_cast<size_t>(n));
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; i++) {
    threads.emplace_back([&, i] {
      size_t k = static_cast<size_t>(i);
      constexpr size_t kBuf = 1 << 20;
      std::vector<char> buf(kBuf);
      Hasher h;
      uint64_t total = 0;
      bool started = false;
      for (;;) {
        size_t got;
        if (!started) {
          ssize_t r;
          do r = ::read(fds[k], buf.data(), kBuf);
          while (r < 0 && errno == EINTR);
          if (r < 0) Die("read");
          first[k] = Clock::now();
          started = true;
          got = static_cast<size_t>(r);
          if (got > 0) got += ReadFull(fds[k], buf.data() + got, kBuf - got);
        } else {
          got = ReadFull(fds[k], buf.data(), kBuf);
        }
        total += got;
        size_t whole = got & ~size_t{31};
        h.Block(buf.data(), whole);
        if (got < kBuf) {
          h.Tail(buf.data() + whole, got - whole);
          break;
        }
      }
      last[k] = Clock::now();
      ::close(fds[k]);
      char digest[17];
      std::snprintf(digest, sizeof digest, "%016" PRIx64, h.Digest(total));
      if (total != want || digest_want != digest) {
        std::fprintf(stderr,
                     "benchtool multi: stream %d: %" PRIu64 " bytes, digest %s; expected %" PRIu64
                     " %s\n",
                     i, total, digest, want, digest_want.c_str());
        bad++;
      }
    });
  }
  for (auto& t : threads) t.join();
  if (bad > 0) return 1;
  auto t0 = *std::min_element(first.begin(), first.end());
  auto t1 = *std::max_element(last.begin(), last.end());
  std::printf("%" PRIu64 " %.6f\n", want * static_cast<uint64_t>(n),
              std::chrono::duration<double>(t1 - t0).count());
  return 0;
}

// Runs session(n) for n = 0, 1, ... until @p count sessions or @p limit seconds, then prints
// "SESSIONS SECONDS PER_SECOND". A session that fails (returns false) fails the run.
int RateLoop(long count, double limit, const std::function<bool(long)>& session) {
  auto t0 = Clock::now();
  long done = 0;
  double secs = 0;
  while (done < count) {
    if (!session(done)) return 1;
    done++;
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (secs >= limit) break;
  }
  std::printf("%ld %.3f %.1f\n", done, secs, static_cast<double>(done) / secs);
  return 0;
}

int ConnRate(int argc, char** argv) {
  if (argc < 5) return 1;
  const char* path = argv[2];
  return RateLoop(std::strtol(argv[3], nullptr, 10), std::strtod(argv[4], nullptr), [&](long n) {
    int s = ConnectUnix(path);
    if (s < 0) Die("connect");
    char c = static_cast<char>('a' + n % 26), r = 0;
    if (!WriteFull(s, &c, 1)) Die("write");
    const bool echoed = ReadFull(s, &r, 1) == 1 && r == c;
    ::close(s);
    if (!echoed) std::fprintf(stderr, "benchtool connrate: no echo on connection %ld\n", n);
    return echoed;
  });
}

int SpawnRate(int argc, char** argv) {
  if (argc < 5) return 1;
  char** command = argv + 4;
  return RateLoop(std::strtol(argv[2], nullptr, 10), std::strtod(argv[3], nullptr), [&](long n) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) < 0 || ::pipe2(out, O_CLOEXEC) < 0) Die("pipe");
    if (!WriteFull(in[1], "x", 1)) Die("write");
    ::close(in[1]);
    pid_t pid = ::fork();
    if (pid < 0) Die("fork");
    if (pid == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::execvp(command[0], command);
      _exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    char buf[16];
    size_t got = ReadFull(out[0], buf, sizeof buf);
    ::close(out[0]);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (got != 1 || buf[0] != 'x' || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "benchtool spawnrate: session %ld: %zu bytes back, status %d\n", n, got,
                   st);
      return false;
    }
    return true;
  });
}

int EpollEcho(int argc, char** argv) {
  if (argc < 3) return 1;
  std::signal(SIGPIPE, SIG_IGN);
  int ls = ListenUnix(argv[2], 4096);
  ::fcntl(ls, F_SETFL, ::fcntl(ls, F_GETFL) | O_NONBLOCK);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) Die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = ls;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) < 0) Die("epoll_ctl");
  std::vector<epoll_event> evs(256);
  char buf[65536];
  for (;;) {
    int n = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      Die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[static_cast<size_t>(i)].data.fd;
      if (fd == ls) {
        for (int k = 0; k < 64; k++) {
          int c = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
          if (c < 0) break;
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          if (::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0) ::close(c);
        }
        continue;
      }
      ssize_t r = ::read(fd, buf, sizeof buf);
      // Blocking write of what was read: echo clients here send tiny amounts.
      if (r <= 0 || !WriteFull(fd, buf, static_cast<size_t>(r))) {
        if (r < 0 && errno == EINTR) continue;
        ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
      }
    }
  }
}

int Idle(int argc, char** argv) {
  if (argc < 4) return 1;
  std::signal(SIGPIPE, SIG_IGN);
  long n = std::strtol(argv[3], nullptr, 10);
  std::vector<int> fds;
  fds.reserve(static_cast<size_t>(n));
  constexpr long kBatch = 100;
  std::string failure;
  for (long base = 0; base < n && failure.empty(); base += kBatch) {
    long end = std::min(n, base + kBatch);
    size_t first = fds.size();
    for (long i = base; i < end; i++) {
      int s = ConnectUnix(argv[2]);
      if (s < 0) {
        failure = std::string("connect: ") + std::strerror(errno);
        break;
      }
      char c = 'i';
      if (!WriteFull(s, &c, 1)) {
        failure = std::string("write: ") + std::strerror(errno);
        ::close(s);
        break;
      }
      fds.push_back(s);
    }
    for (size_t k = first; k < fds.size(); k++) {
      char r = 0;
      if (ReadFull(fds[k], &r, 1) != 1) {
        failure = "no echo (the connection was closed)";
        fds.resize(k);
        break;
      }
    }
  }
  if (failure.empty()) {
    std::printf("ready %zu\n", fds.size());
  } else {
    std::printf("failed %zu %s\n", fds.size(), failure.c_str());
  }
  std::fflush(stdout);
  for (;;) ::pause();
}

// An address of `relay`: unix:PATH or tcp:PORT (127.0.0.1).
struct RelayAddress {
  bool tcp = false;
  std::string path;
  uint16_t port = 0;
};

RelayAddress ParseRelayAddress(const char* text) {
  RelayAddress a;
  std::string s = text;
  if (s.rfind("unix:", 0) == 0) {
    a.path = s.substr(5);
  } else if (s.rfind("tcp:", 0) == 0) {
    a.tcp = true;
    a.port = static_cast<uint16_t>(std::strtoul(s.c_str() + 4, nullptr, 10));
  } else {
    std::fprintf(stderr, "benchtool relay: '%s' is not unix:PATH or tcp:PORT\n", text);
    std::exit(1);
  }
  return a;
}

void NoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int RelayConnect(const RelayAddress& to) {
  if (!to.tcp) return ConnectUnix(to.path.c_str());
  int b = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa = Loopback(to.port);
  if (b >= 0 && ::connect(b, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    ::close(b);
    b = -1;
  }
  if (b >= 0) NoDelay(b);
  return b;
}

int Relay(int argc, char** argv) {
  if (argc < 4) return 1;
  std::signal(SIGPIPE, SIG_IGN);
  const RelayAddress from = ParseRelayAddress(argv[2]);
  const RelayAddress to = ParseRelayAddress(argv[3]);
  int ls = -1;
  if (from.tcp) {
    ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa = Loopback(from.port);
    if (ls < 0 || ::bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 ||
        ::listen(ls, 128) < 0) {
      Die("relay listen");
    }
  } else {
    ls = ListenUnix(from.path.c_str(), 128);
  }
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  auto watch = [ep](int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) Die("relay epoll_ctl");
  };
  watch(ls);
  // peer[fd] is the other end of fd's pair, -1 for none. Writes block (the sockets stay in
  // blocking mode): small request/response messages never fill a socket buffer here.
  std::vector<int> peer;
  char buf[65536];
  for (;;) {
    epoll_event evs[64];
    int n = ::epoll_wait(ep, evs, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      Die("relay epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int a = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
        if (a < 0) continue;
        int b = RelayConnect(to);
        if (b < 0) {
          ::close(a);
          continue;
        }
        if (from.tcp) NoDelay(a);
        size_t need = static_cast<size_t>(std::max(a, b)) + 1;
        if (peer.size() < need) peer.resize(need, -1);
        peer[static_cast<size_t>(a)] = b;
        peer[static_cast<size_t>(b)] = a;
        watch(a);
        watch(b);
        continue;
      }
      int other = static_cast<size_t>(fd) < peer.size() ? peer[static_cast<size_t>(fd)] : -1;
      if (other < 0) continue;  // Closed earlier in this batch.
      // Non-blocking: a number closed and reused earlier in this batch may have nothing to read.
      ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      // Either side's EOF or error ends the pair: the clients here close both ways.
      if (r > 0 && WriteFull(other, buf, static_cast<size_t>(r))) continue;
      peer[static_cast<size_t>(fd)] = -1;
      peer[static_cast<size_t>(other)] = -1;
      ::close(fd);  // Closing removes both from the epoll set.
      ::close(other);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "check") return Check(argc, argv);
  if (cmd == "sha256") return Sha256Check(argc, argv);
  if (cmd == "gen") return Gen(argc, argv);
  if (cmd == "echo") return Echo(argc, argv);
  if (cmd == "pingpong") return PingPong(argc, argv);
  if (cmd == "freeport") return FreePort();
  if (cmd == "serve") return Serve(argc, argv);
  if (cmd == "multi") return Multi(argc, argv);
  if (cmd == "connrate") return ConnRate(argc, argv);
  if (cmd == "spawnrate") return SpawnRate(argc, argv);
  if (cmd == "eecho") return EpollEcho(argc, argv);
  if (cmd == "idle") return Idle(argc, argv);
  if (cmd == "relay") return Relay(argc, argv);
  std::fprintf(
      stderr,
      "usage: benchtool "
      "check|gen|echo|pingpong|freeport|serve|multi|connrate|spawnrate|eecho|idle|relay ...\n");
  return 1;
}
