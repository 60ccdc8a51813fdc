#include "support/pipe_io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "support/process.h"

namespace pipegate::testing {
namespace {

constexpr size_t kBuffer = 64 * 1024;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

FifoReader::FifoReader(std::string path, FifoReaderOptions options)
    : path_(std::move(path)), options_(std::move(options)), paused_(options_.start_paused) {
  fd_ = open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) {
    error_ = "open " + path_ + ": " + std::strerror(errno);
    done_ = true;
    return;
  }
  if (!options_.copy_to.empty()) {
    copy_fd_ = open(options_.copy_to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (copy_fd_ < 0) {
      error_ = "open " + options_.copy_to + ": " + std::strerror(errno);
      close(fd_);
      fd_ = -1;
      done_ = true;
      return;
    }
  }
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

FifoReader::~FifoReader() {
  Stop();
  if (copy_fd_ >= 0) {
    close(copy_fd_);
  }
}

std::string FifoReader::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void FifoReader::Resume() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = false;
  }
  resume_cv_.notify_all();
}

void FifoReader::Stop() {
  stop_ = true;
  resume_cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  done_ = true;
}

bool FifoReader::WaitDone(Duration timeout) const {
  return WaitFor([this] { return done(); }, timeout);
}

uint64_t FifoReader::DeliveredBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  int pending = 0;
  if (fd_ >= 0 && ioctl(fd_, FIONREAD, &pending) != 0) {
    pending = 0;
  }
  return bytes_.load() + static_cast<uint64_t>(pending);
}

std::string FifoReader::Sha256Hex() {
  std::lock_guard<std::mutex> lock(mu_);
  if (digest_.empty()) {
    digest_ = sha_.HexDigest();
  }
  return digest_;
}

std::string FifoReader::data() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_;
}

void FifoReader::Run() {
  std::vector<char> buffer(kBuffer);
  while (!stop_) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (paused_) {
        resume_cv_.wait_for(lock, std::chrono::milliseconds(20));
        continue;
      }
    }
    pollfd pfd{fd_, POLLIN, 0};
    const int ready = poll(&pfd, 1, 50);
    if (ready <= 0) {
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t room = options_.close_after - bytes_.load();
    const size_t want = room < buffer.size() ? static_cast<size_t>(room) : buffer.size();
    const ssize_t n = read(fd_, buffer.data(), want);
    if (n > 0) {
      const auto got = static_cast<size_t>(n);
      sha_.Update(buffer.data(), got);
      if (options_.keep_data) {
        data_.append(buffer.data(), got);
      }
      if (copy_fd_ >= 0 && !WriteAll(copy_fd_, buffer.data(), got)) {
        error_ = "write " + options_.copy_to + ": " + std::strerror(errno);
        done_ = true;
        return;
      }
      bytes_ += got;
      if (bytes_.load() >= options_.close_after) {
        close(fd_);
        fd_ = -1;
        done_ = true;
        return;
      }
      continue;
    }
    if (n == 0) {
      saw_eof_ = true;
      if (options_.stop_at_eof) {
        done_ = true;
        return;
      }
      // No writer now; poll() keeps reporting POLLHUP until one opens, so pace the retries.
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    if (errno == EAGAIN || errno == EINTR) {
      continue;
    }
    error_ = "read " + path_ + ": " + std::strerror(errno);
    done_ = true;
    return;
  }
}

StreamFeeder::StreamFeeder(int fd, uint64_t total, uint64_t seed)
    : fd_(fd), total_(total), seed_(seed), last_progress_ns_(NowNs()) {
  IgnoreSigpipe();
  if (fd_ < 0) {
    error_ = "no descriptor";
    done_ = true;
    return;
  }
  fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
  thread_ = std::thread([this] { Run(); });
}

StreamFeeder::~StreamFeeder() { Stop(); }

Clock::time_point StreamFeeder::last_progress() const {
  return Clock::time_point(std::chrono::nanoseconds(last_progress_ns_.load()));
}

std::string StreamFeeder::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void StreamFeeder::Stop() {
  stop_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  done_ = true;
}

void StreamFeeder::Run() {
  RandomStream random(seed_);
  std::vector<char> buffer(kBuffer);
  size_t offset = 0;
  size_t filled = 0;
  uint64_t remaining = total_;
  while (!stop_) {
    if (paused_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    if (offset == filled) {
      if (remaining == 0) {
        close(fd_);
        fd_ = -1;
        done_ = true;
        return;
      }
      filled = remaining < buffer.size() ? static_cast<size_t>(remaining) : buffer.size();
      random.Fill(buffer.data(), filled);
      remaining -= filled;
      offset = 0;
    }
    pollfd pfd{fd_, POLLOUT, 0};
    if (poll(&pfd, 1, 50) <= 0) {
      continue;
    }
    const ssize_t n = write(fd_, buffer.data() + offset, filled - offset);
    if (n > 0) {
      offset += static_cast<size_t>(n);
      written_ += static_cast<uint64_t>(n);
      last_progress_ns_ = NowNs();
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::string("write: ") + std::strerror(errno);
    close(fd_);
    fd_ = -1;
    done_ = true;
    return;
  }
}

}  // namespace pipegate::testing
