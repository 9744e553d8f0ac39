#include "traffic.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace meshpath::pktgen {
namespace {

uint32_t shapeOf(const TrafficSpec& spec) {
  bool tcp = spec.l4 != L4::kUdp;
  if (spec.family == 4) return tcp ? PG_IPV4_TCP : PG_IPV4_UDP;
  return tcp ? PG_IPV6_TCP : PG_IPV6_UDP;
}

// One's complement sum of 16-bit words as they lie in memory (pg_frame.h's convention).
uint64_t wordSum(const uint8_t* data, size_t len) {
  uint64_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) {
    uint16_t w;
    std::memcpy(&w, data + i, 2);
    sum += w;
  }
  if (len % 2) {
    uint8_t last[2] = {data[len - 1], 0};
    uint16_t w;
    std::memcpy(&w, last, 2);
    sum += w;
  }
  return sum;
}

uint32_t fold32(uint64_t sum) {
  while (sum >> 32) sum = (sum & 0xffffffff) + (sum >> 32);
  return static_cast<uint32_t>(sum);
}

void put16(uint8_t* p, uint16_t hostValue) {
  uint16_t v = htons(hostValue);
  std::memcpy(p, &v, 2);
}

void put32(uint8_t* p, uint32_t hostValue) {
  uint32_t v = htonl(hostValue);
  std::memcpy(p, &v, 4);
}

// Ethernet + IP + L4 headers for packet 0 with every varying field zero, and the payload
// (zeros) after it, frameSize bytes in all.
std::vector<uint8_t> zeroedFrame(const TrafficSpec& spec) {
  std::vector<uint8_t> f(spec.frameSize, 0);
  uint8_t* p = f.data();
  std::memcpy(p, spec.dstMac.data(), 6);
  std::memcpy(p + 6, spec.srcMac.data(), 6);
  bool tcp = spec.l4 != L4::kUdp;
  uint8_t proto = tcp ? IPPROTO_TCP : IPPROTO_UDP;
  uint8_t* l4;
  if (spec.family == 4) {
    put16(p + 12, 0x0800);
    uint8_t* ip = p + PG_L3_OFF;
    ip[0] = 0x45;
    put16(ip + 2, static_cast<uint16_t>(spec.frameSize - PG_L3_OFF));
    put16(ip + 4, 0x1234);  // id, DF, TTL and TCP window as tests/bpf/packet.h builds them
    put16(ip + 6, 0x4000);
    ip[8] = 64;
    ip[9] = proto;
    // saddr (ip + 12) stays zero: written per packet.
    std::memcpy(ip + 16, spec.dstIp.data(), 4);
    l4 = p + PG_L4_OFF_V4;
  } else {
    put16(p + 12, 0x86dd);
    uint8_t* ip = p + PG_L3_OFF;
    ip[0] = 0x60;
    put16(ip + 4, static_cast<uint16_t>(spec.frameSize - PG_L4_OFF_V6));
    ip[6] = proto;
    ip[7] = 64;
    std::memcpy(ip + 8, spec.srcIp.data(), 12);  // the low 4 bytes are written per packet
    std::memcpy(ip + 24, spec.dstIp.data(), 16);
    l4 = p + PG_L4_OFF_V6;
  }
  put16(l4 + 2, spec.dport);
  if (tcp) {
    put32(l4 + 4, 1);                               // seq
    put32(l4 + 8, spec.l4 == L4::kTcpAck ? 1 : 0);  // ack
    l4[12] = 5 << 4;                                // data offset
    l4[13] = spec.l4 == L4::kTcpAck ? 0x10 : 0x02;  // ACK or SYN
    put16(l4 + 14, 8192);                           // window
  } else {
    put16(l4 + 4, static_cast<uint16_t>(f.data() + f.size() - l4));
  }
  return f;
}

}  // namespace

uint32_t headerLength(const TrafficSpec& spec) { return pg_hdr_len(shapeOf(spec)); }

uint32_t minFrameSize(const TrafficSpec& spec) {
  uint32_t n = headerLength(spec) + (spec.stamp ? PG_STAMP_LEN : 0);
  return n < 60 ? 60 : n;
}

std::string validate(const TrafficSpec& spec, int mtu) {
  if (spec.frameSize < minFrameSize(spec)) {
    return "--size " + std::to_string(spec.frameSize) + " is below the smallest frame of this " +
           "shape (" + std::to_string(minFrameSize(spec)) + " bytes)";
  }
  if (spec.frameSize > static_cast<uint32_t>(mtu) + 14) {
    return "--size " + std::to_string(spec.frameSize) + " exceeds the interface's MTU " +
           std::to_string(mtu) + " + 14 bytes of Ethernet header";
  }
  if (spec.frameSize > 3000) return "--size above 3000 bytes does not fit a live frame's page";
  uint64_t pairs = static_cast<uint64_t>(spec.srcIpCount) * spec.sportCount;
  if (spec.flows == 0 || spec.flows > pairs) {
    return "--flows " + std::to_string(spec.flows) + " must be 1.." + std::to_string(pairs) +
           " (source addresses x source ports)";
  }
  uint32_t low;
  std::memcpy(&low, spec.srcIp.data() + (spec.family == 4 ? 0 : 12), 4);
  if (static_cast<uint64_t>(ntohl(low)) + spec.srcIpCount - 1 > 0xffffffffULL) {
    return "the source address range wraps around";
  }
  if (static_cast<uint32_t>(spec.sportMin) + spec.sportCount - 1 > 65535) {
    return "the source port range goes past 65535";
  }
  return "";
}

pg_config makeConfig(const TrafficSpec& spec) {
  pg_config cfg{};
  cfg.shape = shapeOf(spec);
  cfg.flows = spec.flows;
  cfg.nports = spec.sportCount;
  cfg.sport_min = spec.sportMin;
  cfg.stamp = spec.stamp ? 1 : 0;
  uint32_t low;
  std::memcpy(&low, spec.srcIp.data() + (spec.family == 4 ? 0 : 12), 4);
  cfg.saddr_min = ntohl(low);

  std::vector<uint8_t> f = zeroedFrame(spec);
  uint32_t hdr = headerLength(spec);
  std::memcpy(cfg.tmpl, f.data(), hdr);

  uint32_t l4Off = spec.family == 4 ? PG_L4_OFF_V4 : PG_L4_OFF_V6;
  uint32_t l4Len = spec.frameSize - l4Off;
  uint64_t pseudo = 0;
  if (spec.family == 4) {
    cfg.ip_sum = fold32(wordSum(f.data() + PG_L3_OFF, 20));
    pseudo = wordSum(f.data() + PG_L3_OFF + 12, 8);  // saddr (zero) + daddr
  } else {
    pseudo = wordSum(f.data() + PG_L3_OFF + 8, 32);
  }
  uint8_t tail[4] = {0, static_cast<uint8_t>(spec.l4 == L4::kUdp ? IPPROTO_UDP : IPPROTO_TCP),
                     static_cast<uint8_t>(l4Len >> 8), static_cast<uint8_t>(l4Len)};
  pseudo += wordSum(tail, 4);
  cfg.l4_sum = fold32(pseudo + wordSum(f.data() + l4Off, l4Len));
  return cfg;
}

std::vector<uint8_t> initialFrame(const TrafficSpec& spec) {
  std::vector<uint8_t> f = zeroedFrame(spec);
  pg_config cfg = makeConfig(spec);
  pg_write_frame(f.data(), f.data() + f.size(), &cfg, 0, 0);
  return f;
}

std::string describe(const TrafficSpec& spec) {
  const char* l4 = spec.l4 == L4::kUdp ? "udp" : spec.l4 == L4::kTcpSyn ? "tcp-syn" : "tcp-ack";
  return std::string(l4) + " ipv" + std::to_string(spec.family) + " " +
         std::to_string(spec.frameSize) + " B, " + std::to_string(spec.flows) +
         (spec.flows == 1 ? " flow" : " flows");
}

}  // namespace meshpath::pktgen
