// traffic.h — what pktgen is asked to send (TrafficSpec) and its translation into the frame
// writer's template and sums (pg_frame.h), shared by the live-frames and AF_PACKET generators.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "netdev.h"

extern "C" {
#include "pg_frame.h"
}

namespace meshpath::pktgen {

enum class L4 { kUdp, kTcpSyn, kTcpAck };

struct TrafficSpec {
  int family = 4;  // 4 or 6
  L4 l4 = L4::kUdp;
  Mac srcMac{}, dstMac{};
  std::array<uint8_t, 16> srcIp{}, dstIp{};  // network order; IPv4 in the first 4 bytes
  uint32_t srcIpCount = 1;                   // consecutive addresses from srcIp
  uint16_t sportMin = 1024;
  uint32_t sportCount = 1;  // consecutive ports from sportMin
  uint16_t dport = 9;
  uint32_t flows = 1;       // <= srcIpCount * sportCount
  uint32_t frameSize = 60;  // bytes on the wire without FCS
  bool stamp = false;       // magic, sequence and time after the L4 header
};

uint32_t headerLength(const TrafficSpec& spec);  // Ethernet + IP + L4
uint32_t minFrameSize(const TrafficSpec& spec);  // headers (+ stamp), at least 60

// "" when the spec can be sent, else what is wrong with it (for the user).
std::string validate(const TrafficSpec& spec, int mtu);

pg_config makeConfig(const TrafficSpec& spec);

// The frame the generator starts from: headers of packet 0, zero payload.
std::vector<uint8_t> initialFrame(const TrafficSpec& spec);

std::string describe(const TrafficSpec& spec);  // "udp ipv4 60 B, 1000 flows"

}  // namespace meshpath::pktgen
