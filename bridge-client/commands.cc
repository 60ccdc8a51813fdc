// The bridge's commands on top of the Client's session: ls prints the export list; cat, write
// and connect run one stream between stdin/stdout and the pipe; mount hands the export to a
// Mount (mount.h).

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "pipegate/log.h"

#include "client.h"

namespace pipegate::bridge {

using uvglue::LocalPipe;

void Client::StartCommand() {
  if (options_.command == Command::kLs || options_.command == Command::kMount) {
    listing_.clear();  // Every listing starts afresh (a mount may ask again, below).
    mux_->RequestList();
    conn_->Flush();
    return;
  }
  StartSingle();
}

void Client::StartSingle() {
  uvglue::StreamPipes pipes;
  Access access = Access::kRead;
  Command cmd = options_.command;
  if (cmd == Command::kWrite || cmd == Command::kConnect) {
    pipes.in = *LocalPipe::Open(loop_.native(), STDIN_FILENO, LocalPipe::kRead, false, nullptr);
  }
  if (cmd == Command::kCat || cmd == Command::kConnect) {
    pipes.out = *LocalPipe::Open(loop_.native(), STDOUT_FILENO, LocalPipe::kWrite, false, nullptr);
  }
  if (cmd == Command::kWrite) access = Access::kWrite;
  if (cmd == Command::kConnect) access = Access::kDuplex;
  Result<uint32_t> id = OpenStream(access, std::move(pipes), options_.wait_ms);
  if (!id) Finish(id.error());
}

void Client::OnListReply(const std::vector<ListEntry>& entries, bool more) {
  listing_.insert(listing_.end(), entries.begin(), entries.end());
  if (more) return;
  if (options_.command == Command::kLs) {
    PrintListing();
  } else {
    StartMount();
  }
}

void Client::PrintListing() {
  std::string out;
  for (const ListEntry& e : listing_) {
    out += fmt::format("{}\t{}\t{}\n", SanitizeControlBytes(e.name, kMaxReasonBytes),
                       ExportKindName(static_cast<ExportKind>(e.kind)),
                       AccessName(static_cast<Access>(e.access)));
  }
  if (fwrite(out.data(), 1, out.size(), stdout) != out.size() || fflush(stdout) != 0) {
    Finish(Status(Code::kIo, "cannot write the listing to stdout"));
    return;
  }
  Finish(Status::Ok());
}

void Client::StartMount() {
  for (const ListEntry& e : listing_) {
    if (e.name == options_.address.name) {
      mount_ = std::make_unique<Mount>(loop_, options_, this);
      mount_->Start(e);
      return;
    }
  }
  // The listing leaves out what this identity may not use, so it cannot tell "no such pipe"
  // from "access denied": the gateway's answer to an OPEN can (and with hide_existence it is
  // "no such pipe" for both, as for cat).
  ProbeRefusal();
}

void Client::ProbeRefusal() {
  OpenPayload open;
  open.access = static_cast<uint8_t>(Access::kDuplex);
  open.name = options_.address.name;
  Result<uint32_t> id = mux_->Open(open);
  if (!id) {
    Finish(id.error());
    return;
  }
  probe_id_ = *id;
  if (conn_ != nullptr) conn_->Flush();
}

void Client::OnProbeAnswered(uint32_t id, std::optional<ErrorCode> refusal,
                             std::string_view reason) {
  probe_id_ = 0;
  // Refused before the export was touched: that refusal is the mount's answer.
  if (refusal && *refusal != ErrorCode::kBusy && *refusal != ErrorCode::kNoReader) {
    Finish(Message(CodeForError(*refusal), *refusal, reason));
    return;
  }
  // Granted, or refused only for the state of the local pipe: the export became usable (a
  // reload) after the listing was made. Give the stream back and list again, once: a gateway
  // that grants what it never lists would otherwise keep the mount asking.
  if (!refusal) mux_->Abort(id, ErrorCode::kCancel, "mount: the listing is out of date");
  if (relisted_) {
    Finish(Status(Code::kProtocol,
                  fmt::format("the gateway lets this identity open '{}' but does not list it",
                              SanitizeControlBytes(options_.address.name, kMaxReasonBytes))));
    return;
  }
  relisted_ = true;
  StartCommand();
}

}  // namespace pipegate::bridge
