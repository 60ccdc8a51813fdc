// The bridge's commands on top of the Client's session: ls prints the export list; cat, write
// and connect run one stream between stdin/stdout and the pipe; mount hands the export to a
// Mount (mount.h).

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "pipegate/log.h"

#include "client.h"

namespace pipegate::bridge {

using uvglue::LocalPipe;

void Client::StartCommand() {
  if (options_.command == Command::kLs || options_.command == Command::kMount) {
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
  // ls hides exports this identity may not use, so "no such pipe" covers both cases.
  Finish(Status(Code::kNotFound,
                fmt::format("no such pipe '{}' (or access denied)", options_.address.name)));
}

}  // namespace pipegate::bridge
