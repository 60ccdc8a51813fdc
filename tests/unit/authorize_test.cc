// The pure OPEN decision and the export-instance guard: gateway/export_open.cc.

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "export_open.h"

namespace pipegate::gateway {
namespace {

ExportConfig Fifo(std::string name, Access access, std::vector<std::string> allow) {
  ExportConfig e;
  e.name = std::move(name);
  e.kind = ExportKind::kFifo;
  e.access = access;
  e.path = "/nonexistent/" + e.name;
  e.allow = std::move(allow);
  return e;
}

Snapshot MakeSnapshot() {
  Snapshot snap;
  snap.config.exports.push_back(Fifo("logs", Access::kRead, {"cn:alice"}));
  snap.config.exports.push_back(Fifo("sink", Access::kWrite, {"*"}));
  ExportConfig sock;
  sock.name = "shell";
  sock.kind = ExportKind::kUnix;
  sock.access = Access::kDuplex;
  sock.path = "/nonexistent/shell.sock";
  sock.allow = {"cn:alice"};
  snap.config.exports.push_back(sock);
  for (const ExportConfig& e : snap.config.exports) {
    snap.slots[e.name] = std::make_shared<ExportSlot>();
  }
  return snap;
}

PeerIdentity Peer(std::string cn) {
  PeerIdentity p;
  p.common_name = std::move(cn);
  return p;
}

OpenPayload Open(std::string name, Access access) {
  OpenPayload open;
  open.name = std::move(name);
  open.access = static_cast<uint8_t>(access);
  return open;
}

TEST(Authorize, GrantsAnAllowedIdentityTheExportsDirection) {
  Snapshot snap = MakeSnapshot();
  OpenDecision d = Authorize(snap, Peer("alice"), Open("logs", Access::kRead));
  ASSERT_TRUE(d.granted());
  EXPECT_EQ(d.export_config, snap.config.Find("logs"));
  EXPECT_EQ(d.verdict, Verdict::kGranted);
}

TEST(Authorize, GrantsDuplexOnAFifoAndAnyDirectionOnASocket) {
  Snapshot snap = MakeSnapshot();
  EXPECT_TRUE(Authorize(snap, Peer("alice"), Open("logs", Access::kDuplex)).granted());
  EXPECT_TRUE(Authorize(snap, Peer("alice"), Open("shell", Access::kRead)).granted());
  EXPECT_TRUE(Authorize(snap, Peer("bob"), Open("sink", Access::kWrite)).granted());
}

TEST(Authorize, DeniesAnIdentityNotOnTheAllowList) {
  Snapshot snap = MakeSnapshot();
  OpenDecision d = Authorize(snap, Peer("bob"), Open("logs", Access::kRead));
  EXPECT_FALSE(d.granted());
  EXPECT_EQ(d.verdict, Verdict::kAccessDenied);
  EXPECT_EQ(d.error, ErrorCode::kAccessDenied);
  EXPECT_EQ(d.reason, "access denied for 'bob'");
  EXPECT_EQ(d.audit_detail, "not on the allow list");
  EXPECT_FALSE(d.hidden);
}

TEST(Authorize, HideExistenceAnswersADenialLikeAnUnknownName) {
  Snapshot snap = MakeSnapshot();
  snap.config.hide_existence = true;
  OpenDecision denied = Authorize(snap, Peer("bob"), Open("logs", Access::kRead));
  snap.config.exports.erase(snap.config.exports.begin());  // Now "logs" does not exist.
  OpenDecision unknown = Authorize(snap, Peer("bob"), Open("logs", Access::kRead));
  ASSERT_EQ(unknown.verdict, Verdict::kNoSuchPipe);
  EXPECT_FALSE(denied.granted());
  EXPECT_EQ(denied.verdict, Verdict::kAccessDenied);  // The audit line still tells the truth.
  EXPECT_TRUE(denied.hidden);
  EXPECT_EQ(denied.error, unknown.error);
  EXPECT_EQ(denied.reason, unknown.reason);
}

TEST(Authorize, RefusesAnUnknownName) {
  Snapshot snap = MakeSnapshot();
  OpenDecision d = Authorize(snap, Peer("alice"), Open("nope", Access::kRead));
  EXPECT_FALSE(d.granted());
  EXPECT_EQ(d.verdict, Verdict::kNoSuchPipe);
  EXPECT_EQ(d.error, ErrorCode::kNotFound);
  EXPECT_EQ(d.reason, "no such pipe 'nope'");
  EXPECT_EQ(d.audit_detail, "");
}

TEST(Authorize, RefusesAnInvalidNameBeforeLookingItUp) {
  Snapshot snap = MakeSnapshot();
  OpenDecision d = Authorize(snap, Peer("alice"), Open("../etc/passwd", Access::kRead));
  EXPECT_FALSE(d.granted());
  EXPECT_EQ(d.verdict, Verdict::kInvalidName);
  EXPECT_EQ(d.error, ErrorCode::kNotFound);
  EXPECT_FALSE(d.reason.empty());
  EXPECT_EQ(d.reason, d.audit_detail);
}

TEST(Authorize, RefusesANameLongerThanMaxNameLength) {
  Snapshot snap = MakeSnapshot();
  snap.config.limits.max_name_length = 3;
  OpenDecision d = Authorize(snap, Peer("alice"), Open("logs", Access::kRead));
  EXPECT_EQ(d.verdict, Verdict::kInvalidName);
  EXPECT_EQ(d.reason, "pipe names are at most 3 characters here");
}

TEST(Authorize, RefusesTheWrongDirectionOnAFifo) {
  Snapshot snap = MakeSnapshot();
  OpenDecision d = Authorize(snap, Peer("alice"), Open("logs", Access::kWrite));
  EXPECT_FALSE(d.granted());
  EXPECT_EQ(d.verdict, Verdict::kWrongAccess);
  EXPECT_EQ(d.error, ErrorCode::kAccessDenied);
  EXPECT_EQ(d.reason, "access denied: 'logs' is read-only");
  OpenDecision w = Authorize(snap, Peer("alice"), Open("sink", Access::kRead));
  EXPECT_EQ(w.reason, "access denied: 'sink' is write-only");
}

TEST(Authorize, ChecksTheAllowListBeforeTheDirection) {
  Snapshot snap = MakeSnapshot();
  EXPECT_EQ(Authorize(snap, Peer("bob"), Open("logs", Access::kWrite)).verdict,
            Verdict::kAccessDenied);
}

TEST(Authorize, GrantsEarlyDataOnlyWhereTheClientsBytesHaveSomewhereToGo) {
  Snapshot snap = MakeSnapshot();
  ExportConfig messages = snap.config.exports.back();
  messages.name = "jobs";
  messages.socket_type = SocketType::kSeqpacket;
  messages.max_message_size = 4096;
  snap.config.exports.push_back(messages);
  snap.slots["jobs"] = std::make_shared<ExportSlot>();
  auto early = [](std::string name, Access access) {
    OpenPayload open = Open(std::move(name), access);
    open.flags = kOpenFlagEarlyData;
    return open;
  };
  EXPECT_TRUE(Authorize(snap, Peer("alice"), early("shell", Access::kDuplex)).granted());
  EXPECT_TRUE(Authorize(snap, Peer("bob"), early("sink", Access::kWrite)).granted());
  // A duplex open of a read FIFO is granted the read direction: early bytes would be lost.
  OpenDecision read = Authorize(snap, Peer("alice"), early("logs", Access::kDuplex));
  EXPECT_FALSE(read.granted());
  EXPECT_EQ(read.error, ErrorCode::kProtocol);
  EXPECT_EQ(read.reason, "early data needs a byte stream the client writes: 'logs' is read-only");
  OpenDecision msg = Authorize(snap, Peer("alice"), early("jobs", Access::kDuplex));
  EXPECT_FALSE(msg.granted());
  EXPECT_EQ(msg.reason,
            "early data needs a byte stream the client writes: 'jobs' is a message export");
  // Without the flag both are granted as before.
  EXPECT_TRUE(Authorize(snap, Peer("alice"), Open("logs", Access::kDuplex)).granted());
  EXPECT_TRUE(Authorize(snap, Peer("alice"), Open("jobs", Access::kDuplex)).granted());
}

TEST(ExportInstance, HonoursMaxClients) {
  auto slot = std::make_shared<ExportSlot>();
  std::optional<ExportInstance> a = ExportInstance::TryAcquire(slot, 2);
  std::optional<ExportInstance> b = ExportInstance::TryAcquire(slot, 2);
  std::optional<ExportInstance> c = ExportInstance::TryAcquire(slot, 2);
  EXPECT_TRUE(a.has_value());
  EXPECT_TRUE(b.has_value());
  EXPECT_FALSE(c.has_value());
  EXPECT_EQ(slot->in_use.load(), 2u);  // A refusal leaves nothing counted.
}

TEST(ExportInstance, ZeroMeansUnlimited) {
  auto slot = std::make_shared<ExportSlot>();
  std::vector<ExportInstance> held;
  for (int i = 0; i < 100; ++i) {
    std::optional<ExportInstance> got = ExportInstance::TryAcquire(slot, 0);
    ASSERT_TRUE(got.has_value());
    held.push_back(std::move(*got));
  }
  EXPECT_EQ(slot->in_use.load(), 100u);
  held.clear();
  EXPECT_EQ(slot->in_use.load(), 0u);
}

TEST(ExportInstance, IsReleasedOnDestruction) {
  auto slot = std::make_shared<ExportSlot>();
  {
    std::optional<ExportInstance> a = ExportInstance::TryAcquire(slot, 1);
    ASSERT_TRUE(a.has_value());
    EXPECT_FALSE(ExportInstance::TryAcquire(slot, 1).has_value());
  }
  EXPECT_EQ(slot->in_use.load(), 0u);
  EXPECT_TRUE(ExportInstance::TryAcquire(slot, 1).has_value());
}

TEST(ExportInstance, MovesOwnershipWithoutCountingTwice) {
  auto slot = std::make_shared<ExportSlot>();
  std::optional<ExportInstance> a = ExportInstance::TryAcquire(slot, 1);
  ASSERT_TRUE(a.has_value());
  ExportInstance moved(std::move(*a));
  EXPECT_FALSE(a->held());
  EXPECT_TRUE(moved.held());
  a.reset();  // A moved-from instance gives nothing back.
  EXPECT_EQ(slot->in_use.load(), 1u);

  auto other = std::make_shared<ExportSlot>();
  std::optional<ExportInstance> b = ExportInstance::TryAcquire(other, 1);
  ASSERT_TRUE(b.has_value());
  moved = std::move(*b);  // Gives back the instance it held, takes b's.
  EXPECT_EQ(slot->in_use.load(), 0u);
  EXPECT_EQ(other->in_use.load(), 1u);
  b.reset();
  EXPECT_EQ(other->in_use.load(), 1u);
}

}  // namespace
}  // namespace pipegate::gateway
