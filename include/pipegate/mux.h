#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pipegate/buffer.h"
#include "pipegate/frame.h"
#include "pipegate/status.h"

namespace pipegate {

/// @brief A budget of replay bytes shared by several multiplexers (per identity, in total).
/// The Mux takes what it keeps for replay and gives it back once acknowledged or dropped.
///
/// Thread: implementations must be thread-safe (sessions on several workers share one).
/// Available() may be a moment stale; a Mux overshoots by at most one frame.
class ReplayBudget {
 public:
  virtual ~ReplayBudget() = default;
  /// @return Bytes that may still be taken now.
  virtual uint64_t Available() const = 0;
  virtual void Take(uint64_t n) = 0;
  virtual void Give(uint64_t n) = 0;
};

/// @return True if a stream granted as @p ok may take early data (kOpenFlagEarlyData): the client's
/// direction is granted, as a byte stream.
inline bool EarlyDataFits(const OpenOkPayload& ok) noexcept {
  return (ok.access & 0x2) != 0 && (ok.flags & kExportMessages) == 0;
}

/// @brief Limits one side of a connection declares in its SETTINGS.
struct MuxOptions {
  bool is_client = false;
  uint32_t max_frame_payload = 65536 + kDataPrefixSize;  ///< Largest DATA payload we accept.
  uint32_t stream_window = 1u << 20;    ///< Credit we grant each stream (bounds its memory).
  uint32_t session_window = 16u << 20;  ///< Credit we grant the whole connection.
  uint32_t max_streams = 256;           ///< Concurrent streams we accept.
  /// Server: DATA bytes a stream opened with kOpenFlagEarlyData may carry before Accept() (held
  /// by the Mux and delivered by Accept(); counted against the session window). 0 = none.
  uint32_t early_data = 64u << 10;
  bool resumable = false;  ///< Keep sent bytes until acknowledged, so streams survive Detach().
  /// Sending side: bytes of one stream sent and not yet acknowledged, whatever window the peer
  /// grants (the peer's stream window is clamped to it). 0 = the peer's window alone.
  uint32_t max_unacked_per_stream = 0;
  /// Sending side: the same over every stream (clamps the peer's session window). 0 = none.
  uint64_t max_unacked_per_session = 0;
  /// Resumable: a shared budget the replay bytes are also taken from; null = none. Must
  /// outlive the Mux.
  ReplayBudget* replay_budget = nullptr;
};

/// @brief Events of a Mux, delivered synchronously from Feed() or from a Mux method.
///
/// Re-entrancy: every callback may call back into the Mux, including closing the stream it is
/// about; the Mux re-checks its state afterwards. Calls naming a stream that no longer exists
/// are harmless no-ops.
///
/// Events of one role only (marked Server: or Client:) have no-op defaults: the Mux refuses the
/// frames behind them from the wrong peer as protocol errors, so a handler overrides just the
/// events of its own role. OnStreamDelivered and OnGoaway are no-ops unless overridden too.
class MuxCallbacks {
 public:
  virtual ~MuxCallbacks() = default;
  /// @brief The peer's SETTINGS arrived; the connection is usable.
  virtual void OnMuxReady() = 0;
  /// @brief Server: the peer asks to open a stream. Answer with Accept() or Reject(), now or
  /// later.
  virtual void OnOpenRequest(uint32_t id, const OpenPayload& open) {
    (void)id;
    (void)open;
  }
  /// @brief Client: the peer accepted a stream opened with Open().
  virtual void OnOpenAccepted(uint32_t id, const OpenOkPayload& ok) {
    (void)id;
    (void)ok;
  }
  /// @brief Bytes of a stream arrived. @p data is valid only during the call; report delivery
  /// with Consumed() once the bytes are in the local pipe.
  virtual void OnStreamData(uint32_t id, const uint8_t* data, size_t len) = 0;
  /// @brief Message mode: the bytes delivered by OnStreamData so far end a message (the DATA
  /// frame carried kFlagMsgEnd). Called once per message, also across a resume.
  virtual void OnStreamMessageEnd(uint32_t id) { (void)id; }
  /// @brief The peer will send no more bytes on this stream.
  virtual void OnStreamFin(uint32_t id) = 0;
  /// @brief The peer aborted its direction (or refused an Open); no more data will come.
  virtual void OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) = 0;
  /// @brief The peer will read no more; our direction has been reset automatically.
  virtual void OnStreamStopped(uint32_t id, ErrorCode error, std::string_view reason) = 0;
  /// @brief More send credit is available on the stream.
  virtual void OnStreamWritable(uint32_t id) = 0;
  /// @brief The peer has delivered every byte we sent up to and including our FIN.
  virtual void OnStreamDelivered(uint32_t id) { (void)id; }
  /// @brief Both directions are finished; the id is forgotten.
  virtual void OnStreamClosed(uint32_t id) = 0;
  /// @brief Server: the peer asks for the export list.
  virtual void OnListRequest() {}
  /// @brief Client: part of the export list; @p more says whether another part follows.
  virtual void OnListReply(const std::vector<ListEntry>& entries, bool more) {
    (void)entries;
    (void)more;
  }
  /// @brief The peer is going away (a gateway ignores it: the client closes next).
  virtual void OnGoaway(const GoawayPayload& goaway) { (void)goaway; }
  /// @brief Client: the gateway named the session this connection carries.
  virtual void OnSession(const SessionPayload& session) { (void)session; }
  /// @brief Server: the client asks to resume a detached session on this connection. Only the
  /// first frame after SETTINGS may be a RESUME; Feed() returns right after this callback (see
  /// Feed) and the Mux accepts no more input, so the caller can move the rest of the bytes to
  /// the resumed session's Mux.
  virtual void OnResumeRequest(const ResumePayload& resume) { (void)resume; }
  /// @brief Client: the process behind an exec stream ended (EXIT, which comes before the
  /// stream's FIN). May be reported again when a resume replays it.
  virtual void OnStreamExit(uint32_t id, const ExitPayload& exit) {
    (void)id;
    (void)exit;
  }
  /// @brief Client: the gateway resumed the session.
  virtual void OnResumeOk(const ResumeOkPayload& ok) { (void)ok; }
};

/// @brief The sans-I/O stream multiplexer of pipegate/1 (docs/protocol.md).
///
/// It takes decrypted bytes in (Feed) and leaves frames to send in output(). It keeps the stream
/// table, per-stream and per-connection credit (absolute offsets), and the open/FIN/RESET/STOP
/// state machine. No I/O, no clock, no allocation per frame.
///
/// Ownership: owned by its connection handler (a gateway Session, the bridge Client), for the
/// life of the session: it outlives each connection, which only borrows it (Detach and
/// ResumeWith carry the streams across a reconnect). The callbacks must outlive it. Thread:
/// one thread. Re-entrancy: its callbacks may call back into it (see MuxCallbacks).
class Mux {
 public:
  Mux(const MuxOptions& options, MuxCallbacks* callbacks);
  /// Gives every replay byte still held back to the budget.
  ~Mux();
  Mux(const Mux&) = delete;
  Mux& operator=(const Mux&) = delete;

  /// @brief Queues our SETTINGS; call once before anything else is sent.
  void Start();

  /// @brief Processes decrypted bytes. A non-OK status is a connection error: send Goaway()
  /// with ErrorForCode(status.code()) and close.
  /// @param consumed If not null, gets how many bytes were processed: all of them, except
  /// after a RESUME frame, where Feed() stops; the rest belongs to whichever Mux the
  /// connection is given to next. Without @p consumed, bytes after a RESUME are an error.
  Status Feed(const uint8_t* data, size_t len, size_t* consumed = nullptr);
  /// @return True once a RESUME was delivered: this Mux takes no more input.
  bool resume_requested() const noexcept { return resume_requested_; }

  /// @brief Frames waiting to be encrypted and sent. The caller consumes them.
  Buffer& output() noexcept { return out_; }

  // Client side.
  /// @brief Opens a stream; the answer comes as OnOpenAccepted or OnStreamReset. With
  /// kOpenFlagEarlyData, the stream may send up to the gateway's kEarlyData setting at once
  /// (SendWindow() says how much); the flag is dropped when the gateway grants none (SETTINGS
  /// not yet received, or an older gateway).
  Result<uint32_t> Open(const OpenPayload& open);
  /// @brief Asks for the export list; answers come as OnListReply.
  void RequestList();

  // Server side.
  /// @brief Answers OPEN_OK, then delivers what the stream received before it (early data, and
  /// a FIN) through OnStreamData and OnStreamFin, from inside this call. @p ok must grant the
  /// client's direction as a byte stream if the OPEN had kOpenFlagEarlyData (EarlyDataFits).
  /// @return The early bytes delivered (0 for an unknown or already answered stream).
  size_t Accept(uint32_t id, const OpenOkPayload& ok);
  void Reject(uint32_t id, ErrorCode error, std::string_view reason);
  void SendListReply(const std::vector<ListEntry>& entries);

  // Streams.
  /// @return Bytes that may be sent on @p id now (0 if none or unknown).
  size_t SendWindow(uint32_t id) const;
  /// @brief Reserves a DATA frame in output() and returns where its payload goes; @p room gets
  /// how many bytes fit (never 0 unless nullptr is returned). Follow with CommitData().
  uint8_t* BeginData(uint32_t id, size_t* room);
  /// @brief Finishes the frame begun by BeginData() with @p n bytes (n may be 0 with fin).
  /// @param msg_end Message mode: a message ends with this frame (kFlagMsgEnd); the boundary
  /// is kept with the replay bytes, so a resume replays it too.
  void CommitData(uint32_t id, size_t n, bool fin, bool msg_end = false);
  /// @brief Copies up to the window of @p data into DATA frames; returns bytes taken.
  /// @param msg_end The last byte of @p data ends a message: marked when all of it is taken.
  size_t SendData(uint32_t id, const uint8_t* data, size_t len, bool msg_end = false);
  /// @brief Server: sends EXIT (how an exec stream's process ended). Call it right before
  /// SendFin(); it is kept with the stream and sent again before the FIN whenever a resume
  /// resends that FIN, and the FIN then waits for the peer's confirmation before the direction
  /// counts as delivered. Nothing if the direction already ended.
  void SendExit(uint32_t id, const ExitPayload& exit);
  /// @brief Ends our direction after the bytes sent so far.
  void SendFin(uint32_t id);
  /// @brief The app delivered @p n more received bytes into the local pipe.
  void Consumed(uint32_t id, size_t n);
  /// @brief We will read no more (e.g. broken pipe): sends STOP, drops further data.
  void StopReading(uint32_t id, ErrorCode error, std::string_view reason);
  /// @brief Aborts our direction: sends RESET.
  void ResetSending(uint32_t id, ErrorCode error, std::string_view reason);
  /// @brief Aborts both directions.
  void Abort(uint32_t id, ErrorCode error, std::string_view reason);

  // Connection.
  void Goaway(ErrorCode error, std::string_view reason);
  void Ping(uint64_t opaque, bool ack = false);
  bool ready() const noexcept { return peer_settings_; }
  bool goaway_received() const noexcept { return goaway_received_; }
  size_t stream_count() const noexcept { return streams_.size(); }
  bool HasStream(uint32_t id) const { return streams_.count(id) != 0; }
  uint32_t last_peer_stream() const noexcept { return last_peer_id_; }

  // Resumption (SPEC §8, docs/protocol.md "Resume").
  /// @brief The connection is gone: drops partial input and queued output, and holds every
  /// stream (sending pauses) until ResumeWith(). The next connection starts with SETTINGS.
  void Detach();
  /// @return True between Detach() and ResumeWith().
  bool detached() const noexcept { return detached_; }
  /// @return What this side holds of every stream, and of recently closed ones.
  std::vector<ResumeStream> ResumeState() const;
  /// @return The highest stream id seen or used.
  uint32_t last_stream_id() const noexcept {
    return options_.is_client ? (next_id_ > 1 ? next_id_ - 2 : 0) : last_peer_id_;
  }
  /// @brief Reconciles with the peer's view after a reconnect and queues every frame it lost:
  /// OPEN/OPEN_OK, DATA from the peer's received offset, FIN, RESET, STOP and CREDIT. Streams
  /// the peer no longer has end with OnStreamReset. An error means the views cannot be
  /// reconciled (the peer claims bytes never sent, or ones no longer held).
  Status ResumeWith(const std::vector<ResumeStream>& peer, uint32_t peer_last_id);
  /// @brief What the peer's SETTINGS said (to move a connection to another mux).
  struct PeerSettings {
    bool received = false;
    uint32_t max_payload = kDefaultMaxFramePayload;
    uint32_t stream_window = 0;
    uint32_t max_streams = 0;
    uint64_t session_window = 0;
    uint32_t early_data = 0;
  };
  PeerSettings peer_settings() const noexcept {
    return PeerSettings{peer_settings_,    peer_max_payload_,   peer_stream_window_,
                        peer_max_streams_, session_send_limit_, peer_early_data_};
  }
  /// @brief Takes over SETTINGS that another mux received on the connection being moved here.
  void AdoptPeerSettings(const PeerSettings& p) noexcept {
    peer_settings_ = p.received;
    peer_max_payload_ = p.max_payload;
    peer_stream_window_ = p.stream_window;
    peer_max_streams_ = p.max_streams;
    session_send_limit_ = p.session_window;
    peer_early_data_ = p.early_data;
    resume_window_ = false;  // This Mux already carries a session.
  }
  /// @return Of stream @p id: bytes the peer confirmed delivered, and bytes we delivered.
  std::pair<uint64_t, uint64_t> Progress(uint32_t id) const {
    const Stream* s = Find(id);
    return s == nullptr ? std::pair<uint64_t, uint64_t>{0, 0}
                        : std::pair<uint64_t, uint64_t>{s->acked, s->delivered};
  }
  void SendSession(const SessionPayload& session);
  void SendResume(const ResumePayload& resume);
  void SendResumeOk(const ResumeOkPayload& ok);
  /// @return Bytes held for replay across all streams.
  size_t replay_bytes() const;
  /// @return Bytes allocated for early data held until Accept(), across all streams.
  size_t early_data_capacity() const;
  /// @return Bytes allocated for replay across all streams (at least replay_bytes()).
  size_t replay_capacity() const;
  /// @brief Frees the replay storage of every stream that has nothing held and sent nothing
  /// since the previous call. Call it periodically (the connection's 1 s timer does): a stream
  /// that keeps sending keeps its storage, so the data path allocates nothing per frame, and
  /// an idle stream holds none after at most two periods.
  void ReleaseIdleMemory();
  /// @return True if a stream could not send only because the shared replay budget was
  /// spent (cleared by this call). The owner should call WakeWritable() a little later, as no
  /// event of this Mux will signal that another session gave budget back.
  bool TakeBudgetStall() noexcept { return std::exchange(budget_stalled_, false); }
  /// @brief Reports OnStreamWritable for every stream that may send now.
  void WakeWritable();

  // Counters for tests and metrics.
  uint64_t stream_errors() const noexcept { return stream_errors_; }

 private:
  struct Stream {
    bool accepted = false;
    /// Opened with kOpenFlagEarlyData and granted it: the client sends before OPEN_OK.
    bool early = false;
    /// Server: what arrived before Accept() (early data), delivered by Accept().
    Buffer held;
    OpenPayload open;            ///< Client: the OPEN, for replay after a reconnect.
    OpenOkPayload ok;            ///< Server: the OPEN_OK, for replay after a reconnect.
    Buffer replay;               ///< Resumable: bytes [acked, sent) kept until acknowledged.
    bool sent_recently = false;  ///< Sent DATA since the last ReleaseIdleMemory().
    /// Resumable: stream offsets in (acked, sent] where a message ends (message mode), oldest
    /// first, so that a replay marks them again. Bounded by the replay bytes (one per byte at
    /// worst; a message is never empty).
    std::deque<uint64_t> msg_ends;
    bool reset_sent = false;
    ResetPayload reset;
    bool stop_sent = false;
    StopPayload stop;
    bool stop_received = false;                 ///< A replayed STOP is not reported twice.
    ErrorCode end_error = ErrorCode::kNoError;  ///< Why it ended, for its tombstone.
    // Our sending direction.
    uint64_t sent = 0;
    uint64_t acked = 0;
    uint64_t send_limit = 0;
    bool fin_sent = false;
    bool send_done = false;
    bool delivered_reported = false;
    bool exit_sent = false;  ///< Server: EXIT went out before the FIN (resent with it).
    ExitPayload exit;
    // The peer's sending direction.
    uint64_t received = 0;
    uint64_t delivered = 0;
    uint64_t recv_limit = 0;
    uint64_t credited = 0;  ///< `delivered` value in our last CREDIT.
    bool fin_received = false;
    bool recv_done = false;
  };

  enum class DecodeState { kHeader, kDataPrefix, kDataPayload, kControl };

  Status OnFrame();  // Dispatches a complete control frame.
  Status OnDataStart(uint64_t offset);
  void OnDataChunk(const uint8_t* p, size_t n);
  void OnDataEnd();
  Status ApplySettings(const std::vector<Setting>& settings);
  /// @brief Server: delivers what stream @p id received before Accept() (OnStreamData, then a
  /// held FIN as OnDataEnd would have).
  void DeliverHeld(uint32_t id);
  /// @brief The peer's FIN of stream @p s arrived and every byte before it is delivered:
  /// confirms it (forced CREDIT) and ends the receiving direction.
  void FinishReceiving(uint32_t id, Stream& s);
  /// @brief Ends @p s's receiving direction with bytes still undelivered (a RESET, a STOP, an
  /// abort): their connection credit goes back at once, so they are dropped, early data held
  /// for the open included. Only on a direction not yet done.
  void DropReceiving(Stream& s);
  Status OnCredit(uint32_t id, const CreditPayload& c);
  void MaybeSendCredit(uint32_t id, Stream& s, bool force);
  void MaybeSendSessionCredit();
  void SessionConsumed(size_t n);
  void StreamError(uint32_t id, ErrorCode error, std::string_view reason);
  /// @brief Sends STOP and RESET for whichever directions are still open (no callbacks).
  void EndBothDirections(uint32_t id, Stream& s, ErrorCode error, std::string_view reason);
  void Ack(Stream& s, uint64_t delivered);
  void SendRecorded(uint32_t id, Stream& s);  // Replays RESET/STOP this side sent.
  /// @brief Queues DATA of [from, sent) and the FIN if sent. @p widened: the peer widened its
  /// session window for these bytes (it knows the stream and counted them in its resume).
  void ResendData(uint32_t id, Stream& s, uint64_t from, bool widened = true);
  void Tombstone(uint32_t id, const Stream& s, ErrorCode error);
  void MaybeClose(uint32_t id);
  /// @return Where frames go: output(), or a scratch sink while detached (state still
  /// changes; ResumeWith() sends what the peer must learn).
  Buffer& Out() {
    if (!detached_) return out_;
    sink_.Clear();
    return sink_;
  }
  /// @return SendWindow() without the shared replay budget: what this Mux alone allows.
  uint64_t OwnSendWindow(uint32_t id) const;
  /// A stream sends once accepted; a client's early stream before that too. (A gateway's
  /// early stream does not: a client CREDIT before OPEN_OK gives it no right to send first.)
  bool MaySend(const Stream& s) const { return s.accepted || (s.early && options_.is_client); }
  /// @brief Forgets stream @p id, giving its replay bytes back to the budgets.
  void EraseStream(uint32_t id);
  void ReleaseReplay(uint64_t n);
  Stream* Find(uint32_t id);
  const Stream* Find(uint32_t id) const;
  bool IsPeerId(uint32_t id) const { return ((id & 1) == 1) != options_.is_client; }
  bool IsClosedId(uint32_t id) const;
  /// @brief The stream a control frame (named @p frame, for the error) is about: sets @p out
  /// to it, or to null for a stream that has closed (late frames are ignored). A stream that
  /// never existed is a protocol error.
  Status FindForFrame(uint32_t id, const char* frame, Stream** out);

  MuxOptions options_;
  MuxCallbacks* cb_;
  Buffer out_;
  Buffer sink_;
  std::unordered_map<uint32_t, Stream> streams_;

  // Decoder state.
  DecodeState state_ = DecodeState::kHeader;
  uint8_t header_[kFrameHeaderSize] = {};
  size_t header_have_ = 0;
  FrameHeader frame_{};
  uint8_t prefix_[kDataPrefixSize] = {};
  size_t prefix_have_ = 0;
  size_t payload_left_ = 0;
  size_t skip_left_ = 0;  ///< Bytes at the start of this DATA frame already received.
  bool discard_ = false;  ///< The current DATA frame's bytes are dropped.
  Buffer control_;

  // Settings.
  bool peer_settings_ = false;
  uint32_t peer_max_payload_ = kDefaultMaxFramePayload;
  uint32_t peer_stream_window_ = 0;
  uint32_t peer_max_streams_ = 0;
  uint32_t peer_early_data_ = 0;

  // Session credit.
  uint64_t session_sent_ = 0;
  uint64_t session_send_limit_ = 0;
  uint64_t session_received_ = 0;
  uint64_t session_delivered_ = 0;
  uint64_t session_recv_limit_ = 0;
  uint64_t session_credited_ = 0;
  uint64_t session_carry_ = 0;  ///< Undelivered bytes that arrived on an earlier connection.

  uint32_t next_id_ = 0;       ///< Our next stream id.
  uint32_t last_peer_id_ = 0;  ///< Highest stream id the peer opened.
  bool goaway_received_ = false;
  bool detached_ = false;
  std::vector<ResumeStream> closed_;  ///< Recently closed streams (tombstones), oldest first.
  bool goaway_sent_ = false;
  uint64_t stream_errors_ = 0;
  uint64_t unacked_ = 0;       ///< Sum over streams of sent - acked (bounded by the session cap).
  uint64_t budget_taken_ = 0;  ///< Replay bytes taken from options_.replay_budget.
  mutable bool budget_stalled_ = false;
  bool resume_window_ = false;     ///< Server: the next frame may be a RESUME.
  bool frame_may_resume_ = false;  ///< The frame being decoded came in the resume window.
  bool resume_requested_ = false;  ///< Server: a RESUME was delivered; no more input.
};

}  // namespace pipegate
