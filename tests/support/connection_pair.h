#pragma once

// A fixture for loop tests of src/uv: one libuv loop with a client and a server Connection over
// loopback TCP (127.0.0.1) with mutual TLS from the test PKI. Waits are bounded by a deadline
// timer; the teardown closes every handle and ends with uv_loop_close() == 0, as libuv's own
// tests do.

#include <netinet/in.h>

#include <cstdint>
#include <functional>
#include <memory>

#include <gtest/gtest.h>
#include <uv.h>

#include "pipegate/mux.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

#include "support/pki.h"
#include "support/timing.h"
#include "uv/connection.h"

namespace pipegate::testing {

/// @return Connection options whose timers stay out of the way of a test lasting seconds.
uvglue::ConnectionOptions QuietConnectionOptions(bool is_client);

/// @brief The test PKI's server (gateway) and client (alice) TLS contexts.
struct TestTlsContexts {
  std::shared_ptr<const TlsContext> server;
  std::shared_ptr<const TlsContext> client;
};
/// @return The contexts, or a failed assertion saying which could not be loaded.
::testing::AssertionResult LoadTestTls(TestTlsContexts* out);

/// @brief The fixture. @p Side is the test's ConnectionHandler for one end: it is constructed
/// from MuxOptions and has public `Mux mux`, `uvglue::Connection* conn` (null once freed),
/// `bool ready` (set by OnMuxReady) and `Status close_why`.
///
/// Thread: the test's thread runs the loop; Wake() may be called from any thread.
template <class Side>
class ConnectionPairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(EnsureTestPki());
    ASSERT_EQ(0, uv_loop_init(&loop_));
    loop_open_ = true;
    uv_timer_init(&loop_, &deadline_);
    uv_prepare_init(&loop_, &prepare_);
    uv_tcp_init(&loop_, &listener_);
    uv_async_init(&loop_, &wake_, [](uv_async_t* /*handle*/) {});  // OnPrepare looks next.
    deadline_.data = prepare_.data = listener_.data = wake_.data = this;
    ASSERT_TRUE(LoadTestTls(&tls_));
  }

  void TearDown() override {
    if (!loop_open_) return;
    for (Side* side : {client_.get(), server_.get()}) {
      if (side != nullptr && side->conn != nullptr) {
        side->conn->Abort(Status(Code::kStreamLost, "test over"));
      }
    }
    ReleaseLocalEnds();
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&wake_), nullptr);
    // The deadline does not keep the loop alive: the run ends when the last other handle has
    // closed, or at the deadline if one never does.
    uv_timer_start(&deadline_, &ConnectionPairTest::OnDeadline,
                   static_cast<uint64_t>(Scaled(Duration(5000)).count()), 0);
    uv_unref(reinterpret_cast<uv_handle_t*>(&deadline_));
    uv_run(&loop_, UV_RUN_DEFAULT);
    if (uv_loop_alive(&loop_) != 0) {
      ADD_FAILURE() << "handles still open after the test:";
      uv_print_all_handles(&loop_, stderr);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline_), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    for (Side* side : {client_.get(), server_.get()}) {
      if (side != nullptr) {
        EXPECT_TRUE(side->conn == nullptr) << "a connection was never freed";
        CheckSideAfterTest(*side);
      }
    }
    EXPECT_EQ(0, uv_loop_close(&loop_));
  }

  /// @brief Closes what the test holds besides the connections (its local pipes, fds), after
  /// the connections were aborted and before the loop runs down.
  virtual void ReleaseLocalEnds() {}
  /// @brief Checks a side once every handle has closed.
  virtual void CheckSideAfterTest(Side& side) { (void)side; }

  /// @brief Listens on 127.0.0.1:0. A @p socket_buffer other than 0 sets SO_SNDBUF and
  /// SO_RCVBUF of the listener, which accepted sockets inherit: the kernel then buffers
  /// little, so a peer that stops reading shows at once.
  void Listen(const uvglue::ConnectionOptions& options, int socket_buffer = 0) {
    server_options_ = options;
    sockaddr_in addr{};
    ASSERT_EQ(0, uv_ip4_addr("127.0.0.1", 0, &addr));
    ASSERT_EQ(0, uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0));
    if (socket_buffer != 0) {
      int size = socket_buffer;
      ASSERT_EQ(0, uv_send_buffer_size(reinterpret_cast<uv_handle_t*>(&listener_), &size));
      size = socket_buffer;
      ASSERT_EQ(0, uv_recv_buffer_size(reinterpret_cast<uv_handle_t*>(&listener_), &size));
    }
    ASSERT_EQ(0, uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 8,
                           &ConnectionPairTest::OnConnection));
    sockaddr_storage bound{};
    int len = sizeof bound;
    ASSERT_EQ(0, uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len));
    port_ = ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  }

  /// @brief Listens, dials with a client Connection, and runs until both muxes are ready.
  void ConnectPair(const uvglue::ConnectionOptions& server_options, int socket_buffer = 0) {
    server_ = std::make_unique<Side>(server_options.mux);
    ASSERT_NO_FATAL_FAILURE(Listen(server_options, socket_buffer));
    const uvglue::ConnectionOptions client_options = QuietConnectionOptions(/*is_client=*/true);
    client_ = std::make_unique<Side>(client_options.mux);
    client_->conn = uvglue::Connection::Connect(&loop_, "127.0.0.1", port_, tls_.client,
                                                client_options, client_.get(), &client_->mux);
    ASSERT_TRUE(RunUntil([&] { return client_->ready && server_->ready; }, Duration(3000)))
        << "client closed: " << client_->close_why.message()
        << "; server closed: " << server_->close_why.message();
  }

  /// @brief Runs the loop until @p done() holds (checked before every poll) or @p timeout
  /// passes. @return done().
  bool RunUntil(const std::function<bool()>& done, Duration timeout) {
    until_ = &done;
    uv_timer_start(&deadline_, &ConnectionPairTest::OnDeadline,
                   static_cast<uint64_t>(Scaled(timeout).count()), 0);
    uv_prepare_start(&prepare_, &ConnectionPairTest::OnPrepare);
    if (!done()) uv_run(&loop_, UV_RUN_DEFAULT);
    uv_prepare_stop(&prepare_);
    uv_timer_stop(&deadline_);
    until_ = nullptr;
    return done();
  }
  /// @brief Runs the loop for @p period: what the test shows must not happen meanwhile.
  void RunFor(Duration period) {
    RunUntil([] { return false; }, period);
  }

  uv_loop_t loop_{};
  uv_async_t wake_{};  ///< uv_async_send() it from a thread whose work RunUntil() waits for.
  uint16_t port_ = 0;  ///< Of the listener, once Listen() ran.
  TestTlsContexts tls_;
  uvglue::ConnectionOptions server_options_;
  std::unique_ptr<Side> server_;
  std::unique_ptr<Side> client_;

 private:
  static void OnPrepare(uv_prepare_t* handle) noexcept {
    auto* self = static_cast<ConnectionPairTest*>(handle->data);
    if (self->until_ != nullptr && (*self->until_)()) uv_stop(handle->loop);
  }
  static void OnDeadline(uv_timer_t* handle) noexcept { uv_stop(handle->loop); }
  static void OnConnection(uv_stream_t* server, int status) noexcept {
    auto* self = static_cast<ConnectionPairTest*>(server->data);
    if (status != 0 || self->server_ == nullptr || self->server_->conn != nullptr) {
      ADD_FAILURE() << "unexpected connection (status " << status << ")";
      return;
    }
    Result<uvglue::Connection*> conn =
        uvglue::Connection::Accept(&self->loop_, server, self->tls_.server, self->server_options_,
                                   self->server_.get(), &self->server_->mux);
    if (!conn) {
      ADD_FAILURE() << "accept: " << conn.error().message();
      return;
    }
    self->server_->conn = *conn;
  }

  bool loop_open_ = false;
  uv_timer_t deadline_{};
  uv_prepare_t prepare_{};
  uv_tcp_t listener_{};
  const std::function<bool()>* until_ = nullptr;
};

}  // namespace pipegate::testing
