// Loop tests of uvglue::LocalPipe (src/uv/local_pipe.cc) on real FIFOs and socketpairs: reading
// to EOF, the write queue under back-pressure, EPIPE, FinishWriting and Close with bytes still
// queued. The far end of each pipe is a raw fd watched by a uv_poll_t of the test's own, so the
// bytes are checked without the code under test. Every test ends with Loop::Close() true (every
// handle closed); every wait is bounded by a timer.

#include "uv/local_pipe.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <uv.h>

#include "support/data.h"
#include "support/files.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::uvglue {
namespace {

using ::pipegate::testing::Duration;
using ::pipegate::testing::Scaled;

// What a LocalPipe told its owner.
struct Recorder final : LocalPipeEvents {
  void OnLocalReadable() override {
    ++readable;
    if (on_readable) on_readable();
  }
  void OnLocalWritten(size_t n) override {
    written += n;
    ++written_calls;
    if (on_written) on_written(n);
  }
  void OnLocalWriteError(const Status& status) override {
    ++errors;
    error = status;
  }
  void OnLocalWriteDone() override {
    ++done;
    written_at_done = written;
  }

  int readable = 0;
  uint64_t written = 0;
  int written_calls = 0;
  int errors = 0;
  Status error;
  int done = 0;
  uint64_t written_at_done = 0;
  std::function<void()> on_readable;
  std::function<void(size_t)> on_written;
};

// The test's end of a pipe: a raw non-blocking fd on a uv_poll_t of its own that, while
// started, reads everything that arrives and notes EOF.
class FdReader {
 public:
  FdReader(uv_loop_t* loop, int fd) : fd_(fd) {
    fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
    EXPECT_EQ(0, uv_poll_init(loop, &poll_, fd_));
    poll_.data = this;
  }
  ~FdReader() { EXPECT_TRUE(closed_) << "FdReader::Close() was not called"; }
  FdReader(const FdReader&) = delete;
  FdReader& operator=(const FdReader&) = delete;

  void Start() { uv_poll_start(&poll_, UV_READABLE, &FdReader::OnPoll); }
  // Closes the handle and the fd (the fd at once: a writer sees its reader gone).
  void Close() {
    if (closed_) return;
    closed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), nullptr);
    ::close(fd_);
  }
  // Reads what is there now. @return False at EOF or on an error.
  bool ReadNow() {
    uint8_t buf[65536];
    for (;;) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n > 0) {
        data.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
        continue;
      }
      if (n == 0) eof = true;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN) read_error = errno;
      return n < 0 && errno == EAGAIN;
    }
  }

  std::string data;
  bool eof = false;
  int read_error = 0;

 private:
  static void OnPoll(uv_poll_t* handle, int /*status*/, int /*events*/) noexcept {
    auto* self = static_cast<FdReader*>(handle->data);
    if (!self->ReadNow()) uv_poll_stop(handle);
  }

  int fd_;
  uv_poll_t poll_{};
  bool closed_ = false;
};

class LocalPipeLoopTest : public ::testing::Test {
 protected:
  void SetUp() override { ::pipegate::testing::IgnoreSigpipe(); }

  void TearDown() override {
    pipe_.reset();  // Closes it.
    if (reader_ != nullptr) reader_->Close();
    for (int fd : raw_fds_) ::close(fd);
    // Close callbacks run on the loop. The deadline does not keep the loop alive: the run ends
    // when the last other handle has closed, or at the deadline if one never does.
    uv_timer_t deadline{};
    uv_timer_init(loop_.native(), &deadline);
    uv_timer_start(
        &deadline, [](uv_timer_t* t) { uv_stop(t->loop); },
        static_cast<uint64_t>(Scaled(Duration(5000)).count()), 0);
    uv_unref(reinterpret_cast<uv_handle_t*>(&deadline));
    loop_.Run();
    if (uv_loop_alive(loop_.native()) != 0) ADD_FAILURE() << "handles still open after the test";
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline), nullptr);
    reader_.reset();
    EXPECT_TRUE(loop_.Close());  // Prints the handles left open, if any.
  }

  // Makes a FIFO and opens both ends, non-blocking (the read end first, so the write end
  // finds a reader).
  void MakeFifo(int* read_fd, int* write_fd) {
    const std::string path = dir_.Join("fifo");
    ASSERT_TRUE(::pipegate::testing::MakeFifo(path));
    *read_fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(*read_fd, 0) << std::strerror(errno);
    *write_fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(*write_fd, 0) << std::strerror(errno);
  }

  // A FIFO whose write end is the LocalPipe under test, writing in @p mode, and whose read end
  // is reader_ (not yet started).
  void OpenFifoWriter(RecordMode mode = RecordMode::kStream) {
    int rfd = -1;
    int wfd = -1;
    ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
    reader_ = std::make_unique<FdReader>(loop_.native(), rfd);
    ASSERT_NO_FATAL_FAILURE(OpenPipe(wfd, LocalPipe::kWrite));
    pipe_->set_record_mode(mode);
  }

  // Wraps @p fd in the LocalPipe under test (which owns the fd).
  void OpenPipe(int fd, unsigned directions) {
    Result<LocalPipePtr> opened = LocalPipe::Open(loop_.native(), fd, directions, true, &events_);
    ASSERT_TRUE(opened) << opened.error().message();
    pipe_ = std::move(*opened);
  }

  // Runs the loop until @p done() holds or @p timeout passes. @return done().
  bool RunUntil(const std::function<bool()>& done, Duration timeout) {
    bool expired = false;
    Timer deadline(loop_, [&] { expired = true; });
    // Repeating: uv_run(UV_RUN_ONCE) runs due timers before it polls, and a one-shot deadline
    // that fired there would leave that poll with no timer, blocked for good.
    const auto ms = static_cast<uint64_t>(Scaled(timeout).count());
    deadline.Start(ms, std::max<uint64_t>(ms, 1));
    while (!done() && !expired) uv_run(loop_.native(), UV_RUN_ONCE);
    return done();
  }
  // Runs the loop for @p period: what the test shows must not happen meanwhile.
  void RunFor(Duration period) {
    RunUntil([] { return false; }, period);
  }

  Loop loop_;
  ::pipegate::testing::TempDir dir_;
  Recorder events_;
  LocalPipePtr pipe_;  // Null once the test closed it.
  std::unique_ptr<FdReader> reader_;
  std::vector<int> raw_fds_;  // Closed in TearDown.
};

std::string Payload(size_t size, uint64_t seed) {
  return ::pipegate::testing::RandomStream(seed).Next(size);
}

TEST_F(LocalPipeLoopTest, ReadsEveryByteThenEofWhenTheWriterCloses) {
  int rfd = -1;
  int wfd = -1;
  ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
  ASSERT_NO_FATAL_FAILURE(OpenPipe(rfd, LocalPipe::kRead));
  const std::string sent = Payload(48 * 1024, 1);  // Fits the 64 KiB pipe buffer.
  ASSERT_EQ(static_cast<ssize_t>(sent.size()), ::write(wfd, sent.data(), sent.size()));
  ::close(wfd);

  std::string got;
  bool eof = false;
  events_.on_readable = [&] {
    uint8_t buf[4096];
    for (;;) {
      ssize_t n = pipe_->Read(buf, sizeof buf);
      if (n > 0) {
        got.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
        continue;
      }
      if (n == 0) {
        eof = true;
        pipe_->WantRead(false);
      } else {
        EXPECT_EQ(-EAGAIN, n);
      }
      return;
    }
  };
  pipe_->WantRead(true);
  ASSERT_TRUE(RunUntil([&] { return eof; }, Duration(3000)))
      << "got " << got.size() << " of " << sent.size() << " bytes and no EOF";
  EXPECT_EQ(sent, got);
  EXPECT_GT(events_.readable, 0);
  // Stopped: no more readable events, although EOF stays readable.
  const int readable = events_.readable;
  RunFor(Duration(50));
  EXPECT_EQ(readable, events_.readable);
}

TEST_F(LocalPipeLoopTest, ReadWithoutDataSaysEagain) {
  int rfd = -1;
  int wfd = -1;
  ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
  raw_fds_.push_back(wfd);
  ASSERT_NO_FATAL_FAILURE(OpenPipe(rfd, LocalPipe::kRead));
  uint8_t buf[16];
  EXPECT_EQ(-EAGAIN, pipe_->Read(buf, sizeof buf));  // Open() made the fd non-blocking.
  pipe_->WantRead(true);
  RunFor(Duration(50));
  EXPECT_EQ(0, events_.readable) << "readable with nothing to read";
}

// Nobody reads, so most of a large Write() is queued; once the far end drains, OnLocalWritten
// reports exactly the queued bytes, and the bytes arrive whole and in order.
TEST_F(LocalPipeLoopTest, QueuedBytesDrainWhenTheReaderReadsAndAreAllReported) {
  ASSERT_NO_FATAL_FAILURE(OpenFifoWriter());
  const std::string sent = Payload(1 << 20, 2);

  ssize_t now = pipe_->Write(reinterpret_cast<const uint8_t*>(sent.data()), sent.size());
  ASSERT_GT(now, 0);
  ASSERT_LT(static_cast<size_t>(now), sent.size()) << "a pipe took 1 MiB at once";
  EXPECT_EQ(sent.size() - static_cast<size_t>(now), pipe_->queued());
  // More bytes behind a non-empty queue are queued whole; none is written now.
  const std::string more = Payload(10000, 3);
  EXPECT_EQ(0, pipe_->Write(reinterpret_cast<const uint8_t*>(more.data()), more.size()));
  const uint64_t queued = sent.size() + more.size() - static_cast<size_t>(now);
  EXPECT_EQ(queued, pipe_->queued());

  RunFor(Duration(100));  // The pipe is full and nobody reads: nothing moves.
  EXPECT_EQ(0u, events_.written);
  EXPECT_EQ(queued, pipe_->queued());

  reader_->Start();
  ASSERT_TRUE(RunUntil([&] { return events_.written == queued; }, Duration(5000)))
      << "reported " << events_.written << " of " << queued << " queued bytes";
  ASSERT_TRUE(
      RunUntil([&] { return reader_->data.size() == sent.size() + more.size(); }, Duration(3000)));
  EXPECT_EQ(0u, pipe_->queued());
  EXPECT_TRUE(reader_->data == sent + more) << "the bytes arrived altered or out of order";
  EXPECT_EQ(0, events_.errors);
  EXPECT_FALSE(reader_->eof);  // The writer is still open.

  // The drained queue keeps its storage for the next burst until a housekeeping pass finds
  // that nothing was queued since the one before.
  EXPECT_GE(pipe_->queue_capacity(), queued);
  pipe_->ReleaseIdleMemory();
  EXPECT_GE(pipe_->queue_capacity(), queued);
  pipe_->ReleaseIdleMemory();
  EXPECT_EQ(0u, pipe_->queue_capacity());
}

// RecordMode::kBlocks (a write export without --lines) cuts the stream into 4096-byte blocks
// aligned to the stream offset: a partial block waits for its rest and then goes out whole.
TEST_F(LocalPipeLoopTest, BlocksModeHoldsAPartialBlockUntilItsRestArrives) {
  ASSERT_NO_FATAL_FAILURE(OpenFifoWriter(RecordMode::kBlocks));
  const std::string sent = Payload(2 * kPipeBuf, 4);
  const auto* p = reinterpret_cast<const uint8_t*>(sent.data());

  // One whole block and 1000 bytes of the next: the block is written, the rest held.
  EXPECT_EQ(static_cast<ssize_t>(kPipeBuf), pipe_->Write(p, kPipeBuf + 1000));
  EXPECT_EQ(1000u, pipe_->queued());
  reader_->ReadNow();
  EXPECT_EQ(kPipeBuf, reader_->data.size());

  // The rest of the block: queued behind the held bytes, then written together.
  EXPECT_EQ(0, pipe_->Write(p + kPipeBuf + 1000, kPipeBuf - 1000));
  reader_->Start();
  ASSERT_TRUE(RunUntil([&] { return reader_->data.size() == sent.size(); }, Duration(3000)))
      << reader_->data.size() << " of " << sent.size() << " bytes arrived";
  EXPECT_TRUE(reader_->data == sent);
  EXPECT_EQ(kPipeBuf, events_.written);
  EXPECT_EQ(1, events_.written_calls) << "the second block was cut in two";
}

// The hold is a pause in the stream: it counts from the last bytes that left a block
// unfinished. Counted from the first, a stream whose writes end mid-block would be cut inside a
// block whenever the timer expired during one of its short holds, and a record torn.
TEST_F(LocalPipeLoopTest, BlocksModeCountsTheHoldFromTheLatestUnfinishedBlock) {
  ASSERT_NO_FATAL_FAILURE(OpenFifoWriter(RecordMode::kBlocks));
  const std::string sent = Payload(kPipeBuf + 100, 5);
  const auto* p = reinterpret_cast<const uint8_t*>(sent.data());
  constexpr uint64_t kHold = LocalPipe::kBlockHoldMs;

  // At 0 the first 100 bytes are held. At 0.8 hold, the rest of that block and 100 bytes of the
  // next arrive: the first block goes out and the 100 new bytes are held. 0.4 hold later (1.2
  // holds after the first bytes, 0.4 after the latest) the second block must still be held.
  // libuv runs due timers in order of their due times, so a slow machine only delays all three.
  ASSERT_EQ(0, pipe_->Write(p, 100));
  size_t seen_at_check = 0;
  bool checked = false;
  Timer check(loop_, [&] {
    reader_->ReadNow();
    seen_at_check = reader_->data.size();
    checked = true;
  });
  Timer more(loop_, [&] {
    EXPECT_EQ(0, pipe_->Write(p + 100, kPipeBuf));
    check.Start(kHold * 4 / 10);
  });
  more.Start(kHold * 8 / 10);
  ASSERT_TRUE(RunUntil([&] { return checked; }, Duration(5000)));
  EXPECT_EQ(kPipeBuf, seen_at_check) << "the hold counted from the first unfinished block";

  // A stream that then pauses still gets its unfinished block through.
  reader_->Start();
  ASSERT_TRUE(RunUntil([&] { return reader_->data.size() == sent.size(); }, Duration(5000)))
      << reader_->data.size() << " of " << sent.size() << " bytes arrived";
  EXPECT_TRUE(reader_->data == sent);
}

// An error return means no callback: a write to a FIFO whose reader is gone fails at once.
TEST_F(LocalPipeLoopTest, WriteWithoutAReaderFailsWithEpipeAndNoEvent) {
  int rfd = -1;
  int wfd = -1;
  ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
  ASSERT_NO_FATAL_FAILURE(OpenPipe(wfd, LocalPipe::kWrite));
  ::close(rfd);
  const uint8_t byte = 'x';
  EXPECT_EQ(-EPIPE, pipe_->Write(&byte, 1));
  RunFor(Duration(50));
  EXPECT_EQ(0, events_.errors);
  EXPECT_EQ(0u, events_.written);
  EXPECT_EQ(0u, pipe_->queued());
}

// With bytes queued, the reader going away ends the write side with one OnLocalWriteError
// (broken pipe); later writes fail at once.
TEST_F(LocalPipeLoopTest, ReaderGoingAwayWithBytesQueuedIsOneBrokenPipe) {
  int rfd = -1;
  int wfd = -1;
  ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
  reader_ = std::make_unique<FdReader>(loop_.native(), rfd);
  ASSERT_NO_FATAL_FAILURE(OpenPipe(wfd, LocalPipe::kWrite));
  const std::string sent = Payload(256 * 1024, 4);
  ASSERT_GT(pipe_->Write(reinterpret_cast<const uint8_t*>(sent.data()), sent.size()), 0);
  ASSERT_GT(pipe_->queued(), 0u);

  reader_->Close();
  ASSERT_TRUE(RunUntil([&] { return events_.errors > 0; }, Duration(3000)))
      << "no OnLocalWriteError after the reader went away";
  EXPECT_EQ(Code::kBrokenPipe, events_.error.code()) << events_.error.message();
  RunFor(Duration(50));
  EXPECT_EQ(1, events_.errors);
  EXPECT_EQ(0u, events_.written);
  EXPECT_EQ(0, events_.done);
  const uint8_t byte = 'x';
  EXPECT_EQ(-EPIPE, pipe_->Write(&byte, 1));
}

// An idle writer learns of its reader going away only if it watches for it.
TEST_F(LocalPipeLoopTest, WatchHangupReportsTheReaderGoingAwayWhileIdle) {
  int rfd = -1;
  int wfd = -1;
  ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
  ASSERT_NO_FATAL_FAILURE(OpenPipe(wfd, LocalPipe::kWrite));
  pipe_->WatchHangup(true);
  RunFor(Duration(50));
  EXPECT_EQ(0, events_.errors) << "a hang-up reported while the reader is there";
  ::close(rfd);
  ASSERT_TRUE(RunUntil([&] { return events_.errors > 0; }, Duration(3000)));
  EXPECT_EQ(Code::kBrokenPipe, events_.error.code()) << events_.error.message();
  RunFor(Duration(50));
  EXPECT_EQ(1, events_.errors);
}

// On a socket, FinishWriting() waits for the queue, then shuts the write side down: the peer
// reads every byte, then EOF, and OnLocalWriteDone comes once, after the last OnLocalWritten.
TEST_F(LocalPipeLoopTest, FinishWritingOnASocketShutsDownAfterTheQueueDrains) {
  int fds[2];
  ASSERT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  reader_ = std::make_unique<FdReader>(loop_.native(), fds[1]);
  ASSERT_NO_FATAL_FAILURE(OpenPipe(fds[0], LocalPipe::kRead | LocalPipe::kWrite));
  EXPECT_TRUE(pipe_->is_socket());
  const std::string sent = Payload(2 << 20, 5);
  ssize_t now = pipe_->Write(reinterpret_cast<const uint8_t*>(sent.data()), sent.size());
  ASSERT_GE(now, 0);
  const uint64_t queued = pipe_->queued();
  ASSERT_GT(queued, 0u) << "a socketpair took 2 MiB at once";
  pipe_->FinishWriting();
  EXPECT_EQ(0, events_.done) << "done before the queue drained";
  RunFor(Duration(50));
  EXPECT_EQ(0, events_.done);

  reader_->Start();
  ASSERT_TRUE(RunUntil([&] { return reader_->eof; }, Duration(5000)))
      << "read " << reader_->data.size() << " of " << sent.size() << " bytes, no EOF";
  EXPECT_TRUE(reader_->data == sent);
  EXPECT_EQ(1, events_.done);
  EXPECT_EQ(queued, events_.written_at_done);
  EXPECT_EQ(queued, events_.written);
  const uint8_t byte = 'x';
  EXPECT_EQ(-EPIPE, pipe_->Write(&byte, 1)) << "a write after FinishWriting() was taken";
}

// On a FIFO, FinishWriting() with an empty queue reports done at once, from inside the call,
// and leaves the fd open: the reader sees EOF only when the pipe is closed.
TEST_F(LocalPipeLoopTest, FinishWritingOnAFifoReportsDoneAndEofWaitsForClose) {
  int rfd = -1;
  int wfd = -1;
  ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
  reader_ = std::make_unique<FdReader>(loop_.native(), rfd);
  ASSERT_NO_FATAL_FAILURE(OpenPipe(wfd, LocalPipe::kWrite));
  const std::string sent = "the last line\n";
  ASSERT_EQ(static_cast<ssize_t>(sent.size()),
            pipe_->Write(reinterpret_cast<const uint8_t*>(sent.data()), sent.size()));
  pipe_->FinishWriting();
  EXPECT_EQ(1, events_.done) << "OnLocalWriteDone did not come from inside FinishWriting()";
  const uint8_t byte = 'x';
  EXPECT_EQ(-EPIPE, pipe_->Write(&byte, 1));

  reader_->Start();
  ASSERT_TRUE(RunUntil([&] { return reader_->data.size() == sent.size(); }, Duration(3000)));
  EXPECT_EQ(sent, reader_->data);
  RunFor(Duration(50));
  EXPECT_FALSE(reader_->eof) << "FinishWriting() closed the FIFO's fd";

  pipe_.reset();  // Closes the pipe, which frees itself and the fd it owns.
  ASSERT_TRUE(RunUntil([&] { return reader_->eof; }, Duration(3000)));
  EXPECT_EQ(1, events_.done);
  EXPECT_EQ(0, events_.errors);
}

// Close() with bytes queued drops them, calls no event any more, and frees the pipe and its fd
// (the reader sees EOF after what was written before).
TEST_F(LocalPipeLoopTest, CloseWithBytesQueuedFreesThePipeAndItsFd) {
  int rfd = -1;
  int wfd = -1;
  ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
  reader_ = std::make_unique<FdReader>(loop_.native(), rfd);
  ASSERT_NO_FATAL_FAILURE(OpenPipe(wfd, LocalPipe::kWrite));
  const std::string sent = Payload(512 * 1024, 6);
  ssize_t now = pipe_->Write(reinterpret_cast<const uint8_t*>(sent.data()), sent.size());
  ASSERT_GT(now, 0);
  ASSERT_GT(pipe_->queued(), 0u);
  pipe_->FinishWriting();  // Pending: the queue is not empty.
  pipe_->Close();
  pipe_->Close();  // Idempotent until the close callbacks ran.
  pipe_.reset();   // Its deleter closes once more.

  reader_->Start();
  ASSERT_TRUE(RunUntil([&] { return reader_->eof; }, Duration(3000)))
      << "no EOF: the pipe's fd is still open";
  EXPECT_EQ(static_cast<size_t>(now), reader_->data.size());
  EXPECT_EQ(0, sent.compare(0, reader_->data.size(), reader_->data));
  EXPECT_EQ(0u, events_.written);
  EXPECT_EQ(0, events_.errors);
  EXPECT_EQ(0, events_.done);
}

// The owner may close the pipe from inside an event; nothing more is called afterwards.
TEST_F(LocalPipeLoopTest, MayBeClosedFromInsideOnLocalWritten) {
  int rfd = -1;
  int wfd = -1;
  ASSERT_NO_FATAL_FAILURE(MakeFifo(&rfd, &wfd));
  reader_ = std::make_unique<FdReader>(loop_.native(), rfd);
  ASSERT_NO_FATAL_FAILURE(OpenPipe(wfd, LocalPipe::kWrite));
  const std::string sent = Payload(1 << 20, 7);
  ASSERT_GT(pipe_->Write(reinterpret_cast<const uint8_t*>(sent.data()), sent.size()), 0);
  pipe_->FinishWriting();
  events_.on_written = [&](size_t /*n*/) { pipe_.reset(); };
  reader_->Start();
  ASSERT_TRUE(RunUntil([&] { return reader_->eof; }, Duration(3000)));
  EXPECT_EQ(1, events_.written_calls);
  EXPECT_EQ(0, events_.done) << "an event after Close()";
  EXPECT_EQ(0, events_.errors);
  EXPECT_LT(reader_->data.size(), sent.size());
  EXPECT_EQ(0, sent.compare(0, reader_->data.size(), reader_->data));
}

}  // namespace
}  // namespace pipegate::uvglue
