// The bridge's commands on top of the Client's session: ls prints the export list; cat, write
// and connect run one stream between stdin/stdout and the pipe; mount hands the export to a
// Mount (mount.h).

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "pipegate/log.h"

#include "client.h"
#include "listing.h"

namespace pipegate::bridge {

using uvglue::LocalPipe;

void Client::StartCommand() {
  if (options_.command == Command::kLs || options_.command == Command::kStat ||
      options_.command == Command::kMount) {
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
  if (options_.command == Command::kLs || options_.command == Command::kStat) {
    ListOrProbe();
  } else {
    StartMount();
  }
}

void Client::ListOrProbe() {
  const std::string& name = options_.address.name;
  if (name.empty()) {
    PrintListing();
    return;
  }
  // `ls pipe://HOST/NAME`: just that export. One the listing leaves out is either not exported
  // or not for this identity; the gateway's answer to an OPEN tells which (as for mount).
  std::erase_if(listing_, [&](const ListEntry& e) { return e.name != name; });
  if (listing_.empty()) {
    ProbeRefusal();
    return;
  }
  PrintListing();
}

void Client::PrintListing() {
  std::vector<ListingRow> rows;
  rows.reserve(listing_.size());
  for (const ListEntry& e : listing_) {
    ListingRow row{SanitizeControlBytes(e.name, kMaxReasonBytes),
                   ExportKindName(static_cast<ExportKind>(e.kind)),
                   AccessName(static_cast<Access>(e.access))};
    row.messages = (e.flags & kExportMessages) != 0;
    row.clients = e.clients;
    row.max_clients = e.max_clients;
    row.max_message = e.max_message;
    rows.push_back(std::move(row));
  }
  const bool stat = options_.command == Command::kStat;
  const ListingFormat format =
      stat            ? (options_.json ? ListingFormat::kJsonObject : ListingFormat::kDetail)
      : options_.json ? ListingFormat::kJson
      : ::isatty(STDOUT_FILENO) == 1 ? ListingFormat::kTable
                                     : ListingFormat::kTabs;
  const std::string out = FormatListing(rows, format);
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

// ---- --progress ----

namespace {

constexpr uint64_t kProgressTtyMs = 250;    // Redrawn in place: often enough to look live.
constexpr uint64_t kProgressLineMs = 5000;  // A line each: a log file should not fill up.

}  // namespace

void Client::StartProgress() {
  progress_tty_ = ::isatty(STDERR_FILENO) == 1;
  progress_start_ms_ = loop_.Now();
  if (options_.command == Command::kWrite || options_.command == Command::kConnect) {
    struct stat st {};
    if (::fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode)) {
      const off_t at = ::lseek(STDIN_FILENO, 0, SEEK_CUR);
      if (at >= 0 && at <= st.st_size) progress_total_ = static_cast<uint64_t>(st.st_size - at);
    }
  }
  const uint64_t period = progress_tty_ ? kProgressTtyMs : kProgressLineMs;
  progress_timer_.emplace(loop_, [this] { DrawProgress(/*last=*/false); });
  progress_timer_->Start(period, period);
}

void Client::DrawProgress(bool last) {
  if (!streams_.empty()) progress_last_ = TotalProgress();
  ProgressSample p;
  p.sent = progress_last_.first;
  p.received = progress_last_.second;
  p.show_sent = options_.command != Command::kCat;
  p.show_received = options_.command != Command::kWrite;
  p.total = progress_total_;
  p.elapsed_s = static_cast<double>(loop_.Now() - progress_start_ms_) / 1000.0;
  p.rate = progress_rate_.Update(p.sent + p.received, p.elapsed_s);
  if (last && p.elapsed_s > 0) {
    p.rate = static_cast<double>(p.sent + p.received) / p.elapsed_s;  // The average, at the end.
  }
  // Never on stdout: the meter goes to stderr, in one write so that lines stay whole.
  std::string text = progress_tty_ ? "\r" + FormatProgress(p) + "\x1b[K"
                                   : "pipegate: progress: " + FormatProgress(p) + "\n";
  if (last && progress_tty_) text += "\n";
  ssize_t rc = ::write(STDERR_FILENO, text.data(), text.size());
  (void)rc;
}

}  // namespace pipegate::bridge
