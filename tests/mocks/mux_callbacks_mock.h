#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>

#include "pipegate/mux.h"

namespace pipegate {

/// @brief A gMock MuxCallbacks. Use it as StrictMock<MockMuxCallbacks> so that an unexpected
/// event fails the test.
class MockMuxCallbacks : public MuxCallbacks {
 public:
  MOCK_METHOD(void, OnMuxReady, (), (override));
  MOCK_METHOD(void, OnOpenRequest, (uint32_t id, const OpenPayload& open), (override));
  MOCK_METHOD(void, OnOpenAccepted, (uint32_t id, const OpenOkPayload& ok), (override));
  MOCK_METHOD(void, OnStreamData, (uint32_t id, const uint8_t* data, size_t len), (override));
  MOCK_METHOD(void, OnStreamFin, (uint32_t id), (override));
  MOCK_METHOD(void, OnStreamReset, (uint32_t id, ErrorCode error, std::string_view reason),
              (override));
  MOCK_METHOD(void, OnStreamStopped, (uint32_t id, ErrorCode error, std::string_view reason),
              (override));
  MOCK_METHOD(void, OnStreamWritable, (uint32_t id), (override));
  MOCK_METHOD(void, OnStreamDelivered, (uint32_t id), (override));
  MOCK_METHOD(void, OnStreamClosed, (uint32_t id), (override));
  MOCK_METHOD(void, OnListRequest, (), (override));
  MOCK_METHOD(void, OnListReply, (const std::vector<ListEntry>& entries, bool more), (override));
  MOCK_METHOD(void, OnGoaway, (const GoawayPayload& goaway), (override));
  MOCK_METHOD(void, OnSession, (const SessionPayload& session), (override));
  MOCK_METHOD(void, OnResumeRequest, (const ResumePayload& resume), (override));
  MOCK_METHOD(void, OnResumeOk, (const ResumeOkPayload& ok), (override));
  MOCK_METHOD(void, OnStreamExit, (uint32_t id, const ExitPayload& exit), (override));
};

}  // namespace pipegate
